"""One owner of the jobs and the queue per process, not per script load.

The WebUI's *Reload UI* executes ``scripts/`` again in the same process, so anything created at a script's top
level is created twice: the first copy keeps training invisibly, the second knows nothing of it. Objects kept here
live in this package, which the WebUI imports once and never re-executes.
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

T = TypeVar("T")

_LOCK = threading.Lock()
_OWNED: dict[str, object] = {}


def process_owned(key: str, make: Callable[[], T]) -> T:
    """The object kept under ``key`` in this process, made by ``make()`` the first time only."""
    with _LOCK:
        if key not in _OWNED:
            _OWNED[key] = make()
        return _OWNED[key]  # type: ignore[return-value]
