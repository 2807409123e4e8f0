"""Embeddings stored in images, the two ways the WebUI writes and reads them.

1. A ``sd-ti-embedding`` text chunk: base64 of JSON, tensors as ``{"TORCHTENSOR": nested lists}``.
2. Hidden in the pixels (the WebUI's "embedding image"): zlib-compressed JSON split into low and high nibbles, each
   nibble block laid out as columns left and right of the picture, separated from it by black columns, and the
   low nibbles masked with a fixed pseudo-random sequence (an LCG: a=1664525, c=1013904223, seed 0, mod 255).
Both are data only (JSON): nothing in an image can run.
"""

from __future__ import annotations

import base64
import json
import os
import zlib
from typing import Any

import numpy as np
import torch
from PIL import Image

from lib_ti.errors import UserError

IMAGE_EXTENSIONS = (".png", ".webp", ".jxl", ".avif")
TEXT_KEY = "sd-ti-embedding"


def _decode(obj: dict) -> Any:
    if "TORCHTENSOR" in obj:
        return torch.from_numpy(np.array(obj["TORCHTENSOR"], dtype=np.float32))
    return obj


def _mask(shape: tuple[int, ...]) -> np.ndarray:
    """The pseudo-random nibbles the WebUI XORs over the hidden data's low nibbles."""
    count = int(np.prod(shape))
    values = np.empty(count, dtype=np.uint8)
    seed = 0
    for i in range(count):
        seed = (1664525 * seed + 1013904223) % 2**32
        values[i] = seed % 255
    return (values & 0x0F).reshape(shape)


def _crop_black(pixels: np.ndarray) -> np.ndarray:
    lit = (pixels > 0).all(axis=2)
    rows, cols = np.flatnonzero(lit.any(axis=1)), np.flatnonzero(lit.any(axis=0))
    if not len(rows):
        return pixels[:0, :0]
    return pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def hidden_data(image: Image.Image) -> dict | None:
    """The embedding hidden in an image's pixels, or None when there is none (an ordinary picture)."""
    low_nibbles = _crop_black(np.asarray(image.convert("RGB"), dtype=np.uint8)) & 0x0F
    black = np.flatnonzero(low_nibbles.sum(axis=(0, 2)) == 0)
    if len(black) < 2:
        return None
    lower, upper = low_nibbles[:, : black.min(), :], low_nibbles[:, black.max() + 1 :, :]
    if lower.shape != upper.shape or lower.size == 0:
        return None
    mask = _mask(lower.shape)
    data = (((upper ^ mask) << 4) | (lower ^ mask)).astype(np.uint8).tobytes()
    try:
        return json.loads(zlib.decompress(data), object_hook=_decode)
    except (zlib.error, ValueError):
        return None


def image_data(path: str) -> dict:
    """The embedding data of an image file, from its text chunk or its pixels."""
    label = os.path.basename(path)
    try:
        with Image.open(path) as im:
            im.load()
            text = (getattr(im, "text", None) or im.info or {}).get(TEXT_KEY)
            hidden = None if text else hidden_data(im)
    except (OSError, ValueError, SyntaxError) as e:
        if os.path.getsize(path) == 0:
            raise UserError(f"{label} is empty (0 bytes): it holds no embedding.") from None
        raise UserError(f"{label} is damaged: it cannot be opened as an image ({e}).") from None
    if text:
        try:
            return json.loads(base64.b64decode(text), object_hook=_decode)
        except (ValueError, TypeError) as e:
            raise UserError(f"{label}: its embedding text chunk is damaged ({e}).") from None
    if hidden is None:
        raise UserError(
            f"{label} holds no embedding: no '{TEXT_KEY}' text chunk and no data hidden in its pixels "
            "(an ordinary picture, or a preview image)."
        )
    return hidden
