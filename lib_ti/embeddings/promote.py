"""Use a checkpoint of a run as the embedding: a copy in the embeddings folder under a name the user picks.

The checkpoint keeps its metadata (run folder, step), so the grid and the inspector still find its run.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from lib_ti.errors import UserError
from lib_ti.training.config import validate_token

EXTENSIONS = (".safetensors", ".pt")


def use_checkpoint(source: str, embeddings_dir: str, name: str, overwrite: bool, known: set[str]) -> str:
    """Copy ``source`` to ``embeddings_dir/<name><ext>`` atomically; refuses to replace anything unless asked."""
    source = os.path.expanduser(source or "")
    if not os.path.isfile(source) or not source.endswith(EXTENSIONS):
        raise UserError(f"Choose a checkpoint file (.safetensors or .pt); {source!r} is not one.")
    name = (name or "").strip()
    problem = validate_token(name)
    if problem:
        raise UserError(problem.replace("token_string", "Name", 1))
    ext = os.path.splitext(source)[1]
    target = os.path.join(embeddings_dir, name + ext)
    clashes = [
        os.path.join(embeddings_dir, name + e)
        for e in EXTENSIONS
        if os.path.exists(os.path.join(embeddings_dir, name + e))
    ]
    if not overwrite and (clashes or name in known):
        where = clashes[0] if clashes else "the WebUI's embeddings"
        raise UserError(f"An embedding named {name!r} already exists ({where}). Tick Overwrite to replace it.")
    os.makedirs(embeddings_dir, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=embeddings_dir)
    os.close(handle)
    try:
        shutil.copyfile(source, temp)
        os.replace(temp, target)
    except OSError as e:
        if os.path.exists(temp):
            os.remove(temp)
        raise UserError(f"Could not write {target!r}: {e}") from None
    for other in clashes:  # an old file of the same name in the other format would shadow or duplicate it
        if other != target:
            os.remove(other)
    return target
