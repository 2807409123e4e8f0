"""Forge's text engines print "[Textual Inversion] Used Embedding …" every time a prompt uses an embedding, and
Forge has no setting to turn that off. Training encodes its prompts at every step, so the console would fill with
it; :func:`without_lines` drops that one line while the trainer encodes, in the trainer's thread only, so the
user's own generations (any other thread, or after the block) still print it.
"""

from __future__ import annotations

import builtins
import contextlib
import threading
from types import ModuleType
from typing import Iterator

USED_EMBEDDING = "[Textual Inversion] Used Embedding"


@contextlib.contextmanager
def without_lines(module: ModuleType, prefix: str = USED_EMBEDDING) -> Iterator[None]:
    """While inside, ``print`` calls made by ``module``'s code in this thread skip lines starting with ``prefix``.

    The module's global ``print`` shadows the builtin (Python looks names up in the module first); whatever was
    there before is put back."""
    thread = threading.get_ident()
    missing = object()
    before = module.__dict__.get("print", missing)
    fallback = builtins.print if before is missing else before

    def quiet_print(*args, **kwargs) -> None:
        if threading.get_ident() == thread and args and str(args[0]).startswith(prefix):
            return
        fallback(*args, **kwargs)

    module.print = quiet_print
    try:
        yield
    finally:
        if before is missing:
            module.__dict__.pop("print", None)
        else:
            module.print = before
