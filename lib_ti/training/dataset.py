"""The dataset folder: images with optional same-name caption files, read once and prepared for the VAE."""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageOps

from lib_ti.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
CAPTION_ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")  # UTF-16 is recognised by its byte-order mark


@dataclass
class ImageItem:
    path: str
    caption: str
    pixels: torch.Tensor  # (3, H, W) in [-1, 1]
    repeats: int = 1  # kohya's repeats: seen this many times per epoch
    dataset: int = 0  # which of the dataset config's [[datasets]] (batch size and buckets are per dataset)
    flip: bool = False  # flip_aug of its subset
    options: object = None  # its subset's CaptionOptions


@dataclass
class Dataset:
    items: list[ImageItem]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    notes: list[str] = field(default_factory=list)

    def buckets(self) -> dict[tuple[int, int], list[int]]:
        """Item indices grouped by (height, width): a batch must share one size."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, item in enumerate(self.items):
            groups.setdefault(tuple(item.pixels.shape[1:]), []).append(i)
        return groups


def read_caption(path: str, first_line: bool = False) -> tuple[str, str | None]:
    """The caption text and, when it was not UTF-8, the encoding that read it (for the user to know).
    ``first_line``: kohya's reading, which ignores every line after the first."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = raw.decode("utf-16")
        return (text.splitlines() or [""])[0].strip() if first_line else text.strip(), "utf-16"
    for encoding in CAPTION_ENCODINGS:
        try:
            text = raw.decode(encoding)
            if first_line:
                text = (text.splitlines() or [""])[0]
            return " ".join(text.split()), None if encoding == "utf-8-sig" else encoding
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", errors="replace").strip(), "utf-8 with replacements"


def bucket_sizes(resolution: int, step: int = 64, max_ratio: float = 2.0) -> list[tuple[int, int]]:
    """(height, width) pairs of about resolution² pixels, sides multiples of ``step``, up to max_ratio."""
    area = resolution * resolution
    sizes = set()
    width = step
    while width <= resolution * max_ratio:
        height = int(area / width) // step * step
        if height >= step and max(width / height, height / width) <= max_ratio:
            sizes.add((height, width))
        width += step
    sizes.add((resolution, resolution))
    return sorted(sizes)


def choose_size(width: int, height: int, resolution: int, use_buckets: bool) -> tuple[int, int]:
    if not use_buckets:
        return resolution, resolution
    ratio = math.log(width / height)
    return min(bucket_sizes(resolution), key=lambda hw: abs(math.log(hw[1] / hw[0]) - ratio))


def resize_and_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """Scale so the image covers the target, then centre-crop: no stretching, no borders."""
    scale = max(width / image.width, height / image.height)
    new_size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(new_size, Image.LANCZOS)
    left = (image.width - width) // 2
    top = (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def open_image(path: str) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(background, im)
        return im.convert("RGB")


def list_images(folder: str) -> list[str]:
    if not folder or not os.path.isdir(folder):
        raise UserError(f"train_data_dir {folder!r} is not a folder. Give the folder that holds your images.")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."))
    if not names:  # kohya's layout: the images are in <repeats>_<name> subfolders
        names = sorted(
            os.path.join(sub, n)
            for sub in os.listdir(folder)
            if re.match(r"^\d+_", sub) and os.path.isdir(os.path.join(folder, sub))
            for n in os.listdir(os.path.join(folder, sub))
            if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")
        )
    if not names:
        raise UserError(f"train_data_dir {folder!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
    return [os.path.join(folder, n) for n in names]


def load_dataset(folder: str, resolution: int, caption_extension: str = ".txt", use_buckets: bool = False) -> Dataset:
    """Read every image once; unreadable ones are skipped and listed, and training goes on if any are left."""
    items: list[ImageItem] = []
    skipped: list[tuple[str, str]] = []
    notes: list[str] = []
    for path in list_images(folder):
        try:
            image = open_image(path)
        except Exception as e:  # PIL raises many kinds for broken files
            skipped.append((os.path.basename(path), f"cannot be read as an image ({type(e).__name__}: {e})"))
            continue
        caption, caption_path = "", os.path.splitext(path)[0] + caption_extension
        if os.path.isfile(caption_path):
            caption, encoding = read_caption(caption_path)
            if encoding:
                notes.append(f"{os.path.basename(caption_path)} was read as {encoding}.")
        height, width = choose_size(image.width, image.height, resolution, use_buckets)
        items.append(ImageItem(path, caption, to_tensor(resize_and_crop(image, height, width))))
    if not items:
        listing = "; ".join(f"{name}: {why}" for name, why in skipped)
        raise UserError(f"No readable image in {folder!r}. {listing}")
    if skipped:
        notes.append(f"Skipped {len(skipped)} unreadable file(s): " + ", ".join(n for n, _ in skipped))
    return Dataset(items, skipped, notes)
