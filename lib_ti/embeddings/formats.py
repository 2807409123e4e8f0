"""Every embedding format users bring, read safely, and converted to the file the WebUI loads.

Formats: A1111 .pt (``string_to_param``) and PNG with a ``sd-ti-embedding`` text chunk; kohya .safetensors
(``emb_params``, SDXL ``clip_l``/``clip_g``); diffusers (one ``{token: tensor}``; SDXL as a pair of such files, one
per text encoder, which the WebUI cannot load as they are); OneTrainer (``emp_params``, SDXL ``clip_l``/``clip_g``).
Pickled .pt/.bin files are read with torch's weights-only loader: code in them is never run.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field

import numpy as np
import safetensors
import safetensors.torch
import torch
from PIL import Image

from lib_ti.errors import UserError
from lib_ti.embeddings.files import save_embedding, weights_only_load


@dataclass
class EmbeddingFile:
    path: str
    format: str
    vectors: dict[str, torch.Tensor]  # {"clip_l": (n, d)} or {"clip_l": .., "clip_g": ..}
    metadata: dict[str, str] = field(default_factory=dict)
    name: str = ""


def _tensor_dict(path: str) -> tuple[dict, dict[str, str]]:
    """The file's top-level mapping and metadata, without running anything stored in it."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        try:
            with safetensors.safe_open(path, framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except Exception as e:
            raise UserError(f"{os.path.basename(path)} is not a readable .safetensors file ({e}).") from None
    if ext in (".pt", ".bin", ".ckpt"):
        try:
            data = weights_only_load(path)
        except Exception as e:
            raise UserError(
                f"{os.path.basename(path)} cannot be read safely (it may hold code, which is never run): "
                f"{type(e).__name__}."
            ) from None
        if not isinstance(data, dict):
            raise UserError(f"{os.path.basename(path)} holds a {type(data).__name__}, not an embedding.")
        return data, {}
    if ext in (".png", ".webp"):
        return _png_data(path), {}
    raise UserError(f"{os.path.basename(path)}: embeddings are .safetensors, .pt, .bin or .png files.")


def _png_data(path: str) -> dict:
    with Image.open(path) as im:
        text = getattr(im, "text", {}) or im.info
        payload = text.get("sd-ti-embedding")
    if not payload:
        raise UserError(
            f"{os.path.basename(path)} has no 'sd-ti-embedding' text chunk. Embeddings hidden in an "
            "image's pixels are not supported; load that one in the WebUI and save it again."
        )

    def decode(obj):
        if "TORCHTENSOR" in obj:
            return torch.from_numpy(np.array(obj["TORCHTENSOR"], dtype=np.float32))
        return obj

    try:
        return json.loads(base64.b64decode(payload), object_hook=decode)
    except (ValueError, TypeError) as e:
        raise UserError(f"{os.path.basename(path)}: its embedding text chunk is damaged ({e}).") from None


def _as_matrix(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach().float()
    return tensor.unsqueeze(0) if tensor.dim() == 1 else tensor


def read_embedding(path: str, second: str | None = None) -> EmbeddingFile:
    """Any known format; ``second`` is the other half of a diffusers SDXL pair (text_encoder_2's file)."""
    if not os.path.isfile(path):
        raise UserError(f"{path!r} does not exist.")
    data, metadata = _tensor_dict(path)
    label = os.path.basename(path)
    stem = os.path.splitext(label)[0]
    if second:
        if not os.path.isfile(second):
            raise UserError(f"{second!r} does not exist.")
        first_t, second_t = _single(data, label), _single(_tensor_dict(second)[0], os.path.basename(second))
        if first_t.shape[-1] > second_t.shape[-1]:
            first_t, second_t = second_t, first_t
        return EmbeddingFile(path, "diffusers SDXL pair", {"clip_l": first_t, "clip_g": second_t}, metadata, stem)
    if "string_to_param" in data:
        params = data["string_to_param"]
        if len(params) != 1:
            raise UserError(f"{label} holds {len(params)} embeddings; the WebUI loads files with exactly one.")
        fmt = "A1111 PNG" if label.lower().endswith((".png", ".webp")) else "A1111 .pt"
        meta = {
            k: str(v) for k, v in data.items() if k in ("name", "step", "sd_checkpoint", "sd_checkpoint_name") and v
        }
        return EmbeddingFile(
            path,
            fmt,
            {"clip_l": _as_matrix(next(iter(params.values())))},
            {**meta, **metadata},
            str(data.get("name") or stem),
        )
    if "clip_l" in data and "clip_g" in data:
        extra = sorted(set(data) - {"clip_l", "clip_g"})
        if extra and all(isinstance(data[k], torch.Tensor) for k in extra):
            raise UserError(f"{label} holds extra tensors ({', '.join(extra)}); the WebUI would reject it.")
        return EmbeddingFile(
            path,
            "SDXL (kohya / OneTrainer / A1111)",
            {"clip_l": _as_matrix(data["clip_l"]), "clip_g": _as_matrix(data["clip_g"])},
            metadata,
            stem,
        )
    for key, fmt in (("emb_params", "kohya / A1111 .safetensors"), ("emp_params", "OneTrainer")):
        if key in data:
            return EmbeddingFile(path, fmt, {"clip_l": _as_matrix(data[key])}, metadata, stem)
    return EmbeddingFile(
        path,
        "diffusers",
        {"clip_l": _single(data, label)},
        metadata,
        next(iter(data)).strip("<>") if len(data) == 1 else stem,
    )


def _single(data: dict, label: str) -> torch.Tensor:
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != 1:
        keys = ", ".join(map(str, list(data)[:8]))
        raise UserError(
            f"{label} is not an embedding the WebUI can load: it holds {len(tensors)} tensors "
            f"(keys: {keys}); an embedding file holds one (or clip_l and clip_g for SDXL)."
        )
    return _as_matrix(next(iter(tensors.values())))


def convert(source: EmbeddingFile, target: str, overwrite: bool = False) -> str:
    """Write ``source`` as the WebUI's .safetensors, keeping its metadata; refuses to overwrite unless asked."""
    if os.path.exists(target) and not overwrite:
        raise UserError(f"{target!r} already exists. Tick 'overwrite' or choose another name.")
    metadata = {
        **source.metadata,
        "ti_converted_from": os.path.basename(source.path),
        "ti_source_format": source.format,
    }
    name = os.path.splitext(os.path.basename(target))[0]
    step = int(source.metadata.get("step", 0)) if str(source.metadata.get("step", "")).isdigit() else 0
    save_embedding(target, source.vectors, name, step, {k: v for k, v in metadata.items() if k not in ("name", "step")})
    return target
