"""Which images train, with which captions, repeats and buckets: a plain folder, kohya's
``train_data_dir/<repeats>_<name>/`` folders, or sd-scripts' dataset config TOML — read without loading pixels,
so the same plan serves the dataset preview and the run.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from lib_ti.errors import UserError
from lib_ti.training.buckets import BucketSettings, adjust_bucket_limits, select_bucket
from lib_ti.training.captions import CaptionOptions
from lib_ti.training.dataset import (
    IMAGE_EXTENSIONS,
    Dataset,
    ImageItem,
    open_image,
    read_caption,
    resize_and_crop,
    to_tensor,
)

KOHYA_IMAGE_EXTENSIONS = IMAGE_EXTENSIONS + (".bmp",)
REPEATS_FOLDER = re.compile(r"^(\d+)_(.*)$")
FALLBACK_EXTENSIONS = {".caption": [".txt"], ".txt": [".caption"]}  # the two that kohya users mix up


@dataclass
class Subset:
    """One image folder and how its captions are read (sd-scripts' subset keys and defaults)."""

    image_dir: str
    num_repeats: int = 1
    caption_extension: str = ".caption"
    class_tokens: str = ""
    keep_tokens: int = 0
    shuffle_caption: bool = False
    caption_separator: str = ","
    keep_tokens_separator: str = ""
    caption_prefix: str = ""
    caption_suffix: str = ""
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    flip_aug: bool = False
    kohya: bool = True  # kohya reads the first line of a caption file; a plain folder keeps every line


@dataclass
class DatasetSpec:
    """One ``[[datasets]]`` entry: its subsets share a batch size and bucket settings."""

    subsets: list[Subset]
    batch_size: int = 1
    buckets: BucketSettings = field(default_factory=BucketSettings)


@dataclass
class PlannedImage:
    path: str
    caption: str
    caption_file: str  # "" when the caption came from class_tokens or is empty
    repeats: int
    bucket: tuple[int, int]  # (width, height)
    dataset: int
    subset: int


@dataclass
class DatasetPlan:
    specs: list[DatasetSpec]
    images: list[PlannedImage]
    notes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def bucket_counts(self) -> list[dict[tuple[int, int], int]]:
        """Per dataset: images × repeats in each bucket, as sd-scripts logs them."""
        counts: list[dict[tuple[int, int], int]] = [{} for _ in self.specs]
        for image in self.images:
            counts[image.dataset][image.bucket] = counts[image.dataset].get(image.bucket, 0) + image.repeats
        return counts

    def batches_per_epoch(self) -> int:
        """sd-scripts' len(train_dataloader): every bucket of every dataset in batches, the last one smaller."""
        return sum(
            math.ceil(count / spec.batch_size)
            for spec, buckets in zip(self.specs, self.bucket_counts())
            for count in buckets.values()
        )

    @property
    def images_with_repeats(self) -> int:
        return sum(image.repeats for image in self.images)


def repeats_folders(folder: str) -> list[tuple[str, int, str]]:
    """``(path, repeats, class_tokens)`` of the ``<repeats>_<name>`` subfolders, sorted by name."""
    if not os.path.isdir(folder):
        return []
    found = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        match = REPEATS_FOLDER.match(name)
        if os.path.isdir(path) and match and int(match.group(1)) >= 1:
            found.append((path, int(match.group(1)), match.group(2)))
    return found


def folder_images(folder: str, extensions: tuple[str, ...] = KOHYA_IMAGE_EXTENSIONS) -> list[str]:
    if not os.path.isdir(folder):
        return []
    names = (n for n in os.listdir(folder) if n.lower().endswith(extensions) and not n.startswith("."))
    return [os.path.join(folder, n) for n in sorted(names)]


def subsets_for_folder(folder: str, template: Subset) -> tuple[list[Subset], list[str]]:
    """kohya's DreamBooth layout when the folder has ``<repeats>_<name>`` subfolders, else the folder itself."""
    if not folder or not os.path.isdir(folder):
        raise UserError(f"train_data_dir {folder!r} is not a folder. Give the folder that holds your images.")
    notes: list[str] = []
    found = repeats_folders(folder)
    if not found:
        return [_with(template, image_dir=folder, num_repeats=1, class_tokens="", kohya=False)], notes
    loose = folder_images(folder)
    if loose:
        notes.append(
            f"{len(loose)} image(s) directly in {folder!r} are not used: with <repeats>_<name> subfolders, kohya "
            "trains only the subfolders."
        )
    others = [n for n in sorted(os.listdir(folder)) if os.path.isdir(os.path.join(folder, n))]
    skipped = [n for n in others if not REPEATS_FOLDER.match(n) or int(REPEATS_FOLDER.match(n).group(1)) < 1]
    if skipped:
        notes.append("Subfolders without a '<repeats>_' prefix are skipped, as kohya does: " + ", ".join(skipped))
    subsets = [_with(template, image_dir=p, num_repeats=n, class_tokens=name) for p, n, name in found]
    return subsets, notes


def _with(template: Subset, **changes) -> Subset:
    values = dict(template.__dict__)
    values.update(changes)
    return Subset(**values)


def _caption_for(path: str, subset: Subset, fallbacks: list[str], notes: list[str]) -> tuple[str, str]:
    """(caption, file it came from). kohya's default '.caption' falls back to '.txt' (counted in ``fallbacks``)."""
    stem = os.path.splitext(path)[0]
    candidates = [subset.caption_extension] + FALLBACK_EXTENSIONS.get(subset.caption_extension, [])
    for ext in candidates:
        caption_path = stem + ext
        if os.path.isfile(caption_path):
            text, encoding = read_caption(caption_path, first_line=subset.kohya)
            if encoding:
                notes.append(f"{os.path.basename(caption_path)} was read as {encoding}.")
            if ext != subset.caption_extension:
                fallbacks.append(caption_path)
            return text, caption_path
    return subset.class_tokens, ""


def plan_dataset(specs: list[DatasetSpec], bucket_multiple: int = 64) -> DatasetPlan:
    """Every image with its caption, repeats and bucket; unreadable files are skipped and listed.
    ``bucket_multiple``: what bucket sides must divide by (sd-scripts: 64 for SD1/SD2, 32 for SDXL)."""
    images: list[PlannedImage] = []
    notes: list[str] = []
    skipped: list[tuple[str, str]] = []
    fallbacks: list[str] = []
    adjusted_specs = []
    for d, spec in enumerate(specs):
        buckets, bucket_notes = adjust_bucket_limits(spec.buckets, bucket_multiple)
        notes += bucket_notes
        adjusted_specs.append(DatasetSpec(spec.subsets, spec.batch_size, buckets))
        for s, subset in enumerate(spec.subsets):
            paths = folder_images(subset.image_dir, KOHYA_IMAGE_EXTENSIONS if subset.kohya else IMAGE_EXTENSIONS)
            if not paths:
                notes.append(f"{subset.image_dir!r} holds no images; skipped.")
            for path in paths:
                try:
                    with Image.open(path) as im:
                        size = im.size
                except Exception as e:  # PIL raises many kinds for broken files
                    skipped.append((os.path.basename(path), f"cannot be read as an image ({type(e).__name__}: {e})"))
                    continue
                caption, caption_file = _caption_for(path, subset, fallbacks, notes)
                bucket = select_bucket(size[0], size[1], buckets)
                images.append(PlannedImage(path, caption, caption_file, subset.num_repeats, bucket, d, s))
    if fallbacks:
        wanted, found = specs[0].subsets[0].caption_extension, os.path.splitext(fallbacks[0])[1]
        notes.append(
            f"caption_extension is {wanted!r} (kohya's default is '.caption') but {len(fallbacks)} image(s) have "
            f"only a {found!r} caption; those were used."
        )
    if skipped:
        notes.append(f"Skipped {len(skipped)} unreadable file(s): " + ", ".join(n for n, _ in skipped))
    if not images:
        where = ", ".join(repr(s.image_dir) for spec in specs for s in spec.subsets) or "the dataset"
        raise UserError(f"No readable image in {where} ({', '.join(IMAGE_EXTENSIONS)}).")
    return DatasetPlan(adjusted_specs, images, notes, skipped)


def bucket_multiple(native_resolution: int) -> int:
    """sd-scripts' bucket step rule by model: SDXL (native 1024) allows 32, SD1/SD2 need 64."""
    return 32 if native_resolution >= 1024 else 64


SUBSET_KEYS = tuple(k for k in Subset.__dataclass_fields__ if k not in ("image_dir", "kohya"))
DATASET_KEYS = (
    "batch_size", "resolution", "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps",
    "bucket_no_upscale",
)  # fmt: skip
NOT_USED = {"is_reg": "regularisation images are not used", "metadata_file": "fine-tuning metadata is not read"}


def _command_line(config, resolution: int) -> dict[str, Any]:
    """The run's own values: sd-scripts' last fallback after subset, dataset and [general]."""
    values = {key: getattr(config, key) for key in SUBSET_KEYS if hasattr(config, key)}
    values.update({key: getattr(config, key) for key in DATASET_KEYS if hasattr(config, key)})
    values["batch_size"] = config.train_batch_size
    values["resolution"] = resolution
    return values


def _lookup(key: str, tables: list[dict[str, Any]], default: Any = None) -> Any:
    for table in tables:
        if table.get(key) is not None:
            return table[key]
    return default


def _bucket_settings(tables: list[dict[str, Any]]) -> BucketSettings:
    size = _lookup("resolution", tables)
    size = tuple(size) if isinstance(size, (list, tuple)) else (int(size), int(size))
    return BucketSettings(
        (int(size[0]), int(size[-1])),
        bool(_lookup("enable_bucket", tables, False)),
        int(_lookup("min_bucket_reso", tables, 256)),
        int(_lookup("max_bucket_reso", tables, 1024)),
        int(_lookup("bucket_reso_steps", tables, 64)),
        bool(_lookup("bucket_no_upscale", tables, False)),
    )


def _resolve_dir(path: str, base: str) -> str:
    """Relative image_dir: kohya resolves it from where it runs; the TOML's own folder is tried first here."""
    if os.path.isabs(path):
        return path
    beside = os.path.normpath(os.path.join(base, path))
    return beside if os.path.isdir(beside) else os.path.abspath(path)


def specs_from_toml(path: str, command_line: dict[str, Any]) -> tuple[list[DatasetSpec], list[str]]:
    from lib_ti.training.kohya_toml import read_toml

    data = read_toml(path, "dataset_config")
    general = data.get("general", {}) or {}
    notes: list[str] = []
    specs = []
    for d, dataset in enumerate(data.get("datasets", []) or []):
        subsets = []
        for sub in dataset.get("subsets", []) or []:
            for key, why in NOT_USED.items():
                if sub.get(key):
                    notes.append(f"dataset_config: a subset with {key} is skipped ({why}).")
            if any(sub.get(key) for key in NOT_USED) or not sub.get("image_dir"):
                continue
            tables = [sub, dataset, general, command_line]
            values = {key: _lookup(key, tables, getattr(Subset, key)) for key in SUBSET_KEYS}
            values["class_tokens"] = values["class_tokens"] or ""
            image_dir = _resolve_dir(str(sub["image_dir"]), os.path.dirname(os.path.abspath(path)))
            subsets.append(Subset(image_dir=image_dir, **values))
        if subsets:
            tables = [dataset, general, command_line]
            specs.append(DatasetSpec(subsets, int(_lookup("batch_size", tables, 1)), _bucket_settings(tables)))
        else:
            notes.append(f"dataset_config: datasets[{d}] has no usable subset.")
    if not specs:
        raise UserError(f"dataset_config {path!r} defines no [[datasets]] with [[datasets.subsets]] image_dir.")
    return specs, notes


def dataset_specs(config, native_resolution: int) -> tuple[list[DatasetSpec], list[str]]:
    """The datasets a config trains on: its dataset_config TOML, or train_data_dir (kohya layout or plain)."""
    command_line = _command_line(config, config.resolution or native_resolution)
    if getattr(config, "dataset_config", ""):
        return specs_from_toml(config.dataset_config, command_line)
    template = Subset(image_dir="", **{k: command_line[k] for k in SUBSET_KEYS if k in command_line})
    subsets, notes = subsets_for_folder(config.train_data_dir, template)
    return [DatasetSpec(subsets, config.train_batch_size, _bucket_settings([command_line]))], notes


def caption_options(subset: Subset) -> CaptionOptions:
    return CaptionOptions(
        subset.shuffle_caption,
        subset.keep_tokens,
        subset.caption_separator,
        subset.keep_tokens_separator or "",
        subset.caption_prefix or "",
        subset.caption_suffix or "",
        subset.caption_dropout_rate,
        subset.caption_dropout_every_n_epochs,
    )


def load_planned(plan: DatasetPlan) -> Dataset:
    """The pixels of every planned image, scaled to cover its bucket and centre-cropped (as sd-scripts does)."""
    items: list[ImageItem] = []
    skipped = list(plan.skipped)
    for image in plan.images:
        subset = plan.specs[image.dataset].subsets[image.subset]
        try:
            pixels = open_image(image.path)
        except Exception as e:  # PIL raises many kinds for broken files
            skipped.append((os.path.basename(image.path), f"cannot be read as an image ({type(e).__name__}: {e})"))
            continue
        width, height = image.bucket
        tensor = to_tensor(resize_and_crop(pixels, height, width))
        options = caption_options(subset)
        items.append(
            ImageItem(image.path, image.caption, tensor, image.repeats, image.dataset, subset.flip_aug, options)
        )
    if not items:
        raise UserError("No readable image: " + "; ".join(f"{name}: {why}" for name, why in skipped))
    return Dataset(items, skipped, list(plan.notes))
