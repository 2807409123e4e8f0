"""Every embedding format users bring, read safely, and converted to the file the WebUI loads.

Formats: A1111 .pt (``string_to_param``, a plain dict or, in 2022 files, a ``torch.nn.ParameterDict``), the original
textual_inversion repository's ``embeddings.pt`` (``string_to_token`` + ``string_to_param``), and A1111 images (PNG,
WebP…) with the data in a ``sd-ti-embedding`` text chunk or hidden in the pixels; kohya .safetensors (``emb_params``,
SDXL ``clip_l``/``clip_g``); diffusers (one ``{token: tensor}``; SDXL as a pair of such files, one per text encoder,
which the WebUI cannot load as they are); OneTrainer (``emp_params``, SDXL ``clip_l``/``clip_g``); SDXL as two
tensors under other names (``emb`` 768 wide + ``emb2`` 1280 wide), which the WebUI cannot load either.
Pickled .pt/.bin files are read by ``lib_ti.embeddings.pickled``: code in them is never run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import safetensors
import torch

from lib_ti.errors import UserError
from lib_ti.embeddings.files import save_embedding
from lib_ti.embeddings.images import IMAGE_EXTENSIONS, image_data
from lib_ti.embeddings.pickled import PickledParameterDict, load_pickled


@dataclass
class EmbeddingFile:
    path: str
    format: str
    vectors: dict[str, torch.Tensor]  # {"clip_l": (n, d)} or {"clip_l": .., "clip_g": ..}
    metadata: dict[str, str] = field(default_factory=dict)
    name: str = ""
    webui_loads: bool = True  # False: a layout the WebUI cannot load as it is (convert it)


def _tensor_dict(path: str) -> tuple[dict, dict[str, str]]:
    """The file's top-level mapping and metadata, without running anything stored in it."""
    label = os.path.basename(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        if os.path.getsize(path) == 0:
            raise UserError(f"{label} is empty (0 bytes): it holds no embedding.")
        try:
            with safetensors.safe_open(path, framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except Exception as e:
            raise UserError(f"{label} is damaged: not a readable .safetensors file ({e}).") from None
    if ext in (".pt", ".bin", ".ckpt"):
        data = load_pickled(path)
        if not isinstance(data, dict):
            raise UserError(f"{label} holds a {type(data).__name__}, not an embedding.")
        return data, {}
    if ext in IMAGE_EXTENSIONS:
        return image_data(path), {}
    raise UserError(f"{label}: embeddings are .safetensors, .pt, .bin or .png/.webp files.")


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
        vectors = {"clip_l": first_t, "clip_g": second_t}
        return EmbeddingFile(path, "diffusers SDXL pair", vectors, metadata, stem, webui_loads=False)
    if "string_to_param" in data:
        return _textual_inversion(path, data, metadata)
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
    pair = _sdxl_by_width(data)
    if pair:
        (key_l, clip_l), (key_g, clip_g) = pair
        fmt = f"SDXL as two tensors ({key_l} + {key_g})"
        return EmbeddingFile(path, fmt, {"clip_l": clip_l, "clip_g": clip_g}, metadata, stem, webui_loads=False)
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


def _textual_inversion(path: str, data: dict, metadata: dict[str, str]) -> EmbeddingFile:
    """``string_to_param``: the WebUI's .pt and images, and the original textual_inversion repository's file."""
    label = os.path.basename(path)
    params = data["string_to_param"]
    params = getattr(params, "_parameters", params)  # a real torch ParameterDict, when torch itself built one
    if not hasattr(params, "values"):
        raise UserError(f"{label}: its string_to_param is a {type(params).__name__}, not a set of vectors.")
    if len(params) != 1:
        keys = ", ".join(map(str, list(params)[:8]))
        raise UserError(f"{label} holds {len(params)} embeddings ({keys}); the WebUI loads files with exactly one.")
    ext = os.path.splitext(label)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        fmt = f"A1111 {ext[1:].upper()}"
    elif isinstance(params, PickledParameterDict) and "name" not in data and "string_to_token" in data:
        fmt = "textual_inversion repository embeddings.pt"
    else:
        fmt = "A1111 .pt (ParameterDict, 2022)" if isinstance(params, PickledParameterDict) else "A1111 .pt"
    meta = {k: str(v) for k, v in data.items() if k in ("name", "step", "sd_checkpoint", "sd_checkpoint_name") and v}
    vector = next(iter(params.values()))
    if not isinstance(vector, torch.Tensor):
        raise UserError(f"{label}: its string_to_param holds a {type(vector).__name__}, not a tensor.")
    return EmbeddingFile(
        path, fmt, {"clip_l": _as_matrix(vector)}, {**meta, **metadata}, str(data.get("name") or "") or _stem(label)
    )


def _stem(label: str) -> str:
    return os.path.splitext(label)[0]


SDXL_WIDTHS = (768, 1280)  # clip_l, clip_g


def _sdxl_by_width(data: dict) -> tuple[tuple[str, torch.Tensor], tuple[str, torch.Tensor]] | None:
    """Two tensors, one per SDXL text encoder, under other names (e.g. ``emb`` + ``emb2``): told apart by width."""
    tensors = {k: _as_matrix(v) for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != 2:
        return None
    (k1, t1), (k2, t2) = sorted(tensors.items(), key=lambda kv: kv[1].shape[-1])
    if (t1.shape[-1], t2.shape[-1]) != SDXL_WIDTHS:
        return None
    return (str(k1), t1), (str(k2), t2)


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
