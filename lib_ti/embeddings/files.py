"""Embedding and optimizer files in the formats the WebUI reads, written atomically.

SD1/SD2 vectors are one tensor (``emb_params`` in .safetensors, ``string_to_param`` in .pt); SDXL files hold
exactly ``clip_l`` and ``clip_g``. In memory, vectors are ``{"clip_l": (n, d)}`` or ``{"clip_l": .., "clip_g": ..}``,
the keys the WebUI's embedding layer itself uses.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from typing import Any

import safetensors.torch
import torch

from lib_ti.errors import UserError

SINGLE_KEY = "emb_params"
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: the process umask, so written files get the usual permissions


def make_folder(folder: str) -> None:
    """Create a folder, or say plainly why it cannot be (read-only disk, a file in the way, no permission)."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise UserError(f"Cannot create the folder {folder!r}: {e.strerror or e}.") from None


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=folder)
    except OSError as e:
        raise UserError(f"Cannot write to {folder!r}: {e.strerror or e}") from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the file should read like any other the WebUI writes
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise UserError(f"Cannot write {path!r}: {e.strerror or e}. Nothing was overwritten.") from None


def vectors_digest(vectors: dict[str, torch.Tensor]) -> str:
    """A hash of the vectors, to tell whether a saved optimizer state belongs to them."""
    h = hashlib.sha256()
    for key in sorted(vectors):
        h.update(key.encode())
        h.update(vectors[key].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def embedding_tensors(vectors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in vectors.items()}
    if set(tensors) == {"clip_l"}:
        return {SINGLE_KEY: tensors["clip_l"]}
    return tensors


def save_embedding(
    path: str, vectors: dict[str, torch.Tensor], name: str, step: int, metadata: dict[str, str] | None = None
) -> None:
    """Save in the format the extension of ``path`` names; the WebUI loads either as is."""
    tensors = embedding_tensors(vectors)
    if path.endswith(".safetensors"):
        meta = {"name": name, "step": str(step), **(metadata or {})}
        data = safetensors.torch.save(tensors, metadata={k: str(v) for k, v in meta.items()})
    elif path.endswith(".pt"):
        if SINGLE_KEY in tensors:
            obj: dict[str, Any] = {
                "string_to_token": {"*": 265},
                "string_to_param": {"*": tensors[SINGLE_KEY]},
                "name": name,
                "step": step,
                "sd_checkpoint": (metadata or {}).get("ti_base_model_hash"),
                "sd_checkpoint_name": (metadata or {}).get("ti_base_model_name"),
            }
        else:  # the WebUI reads an SDXL .pt only when it holds exactly the two tensors
            obj = tensors
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        data = buffer.getvalue()
    else:
        raise UserError(f"Unknown embedding format for {path!r}: use .safetensors or .pt")
    atomic_write_bytes(path, data)


def load_embedding(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Vectors and metadata of an embedding file, read the way ``lib_ti.embeddings.formats`` reads every known format."""
    from lib_ti.embeddings.formats import read_embedding  # formats builds on this module's writers

    file = read_embedding(path)
    return file.vectors, file.metadata


def save_optimizer_state(path: str, state: dict[str, Any], vectors: dict[str, torch.Tensor]) -> None:
    """Optimizer state as .safetensors (no pickle), tied to the vectors it was saved with.

    Per-parameter values may nest (bitsandbytes wraps its 8-bit quantization tensors in a dict): nested keys are
    joined with '.' and the nesting is restored on load.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}

    def flatten(name: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            tensors[name] = value.detach().cpu().contiguous()
        elif isinstance(value, dict):
            for key, inner in value.items():
                flatten(f"{name}.{key}", inner)
        else:
            scalars[name] = value

    for index, values in state["state"].items():
        for key, value in values.items():
            flatten(f"state.{index}.{key}", value)
    meta = {
        "param_groups": json.dumps(state["param_groups"]),
        "scalars": json.dumps(scalars),
        "vectors_digest": vectors_digest(vectors),
    }
    atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=meta))


def load_optimizer_state(path: str, vectors: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """The saved state when it exists and belongs to these vectors; None otherwise."""
    if not os.path.isfile(path):
        return None
    try:
        with safetensors.safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception:
        return None
    if meta.get("vectors_digest") != vectors_digest(vectors):
        return None
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(json.loads(meta.get("scalars", "{}")).items()):
        _, index, *keys = name.split(".")
        slot = state.setdefault(int(index), {})
        for key in keys[:-1]:
            slot = slot.setdefault(key, {})
        slot[keys[-1]] = value
    return {"state": state, "param_groups": json.loads(meta["param_groups"])}
