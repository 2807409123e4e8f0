"""Aspect-ratio buckets chosen the way kohya's sd-scripts chooses them, so a kohya dataset gets the same
bucket sizes and therefore the same number of batches per epoch.

Sizes are (width, height), as in sd-scripts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BucketSettings:
    """One dataset's bucket options (sd-scripts' dataset keys and defaults)."""

    resolution: tuple[int, int] = (512, 512)  # (width, height): the area every bucket keeps
    enable_bucket: bool = False
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False


def bucket_resolutions(max_reso: tuple[int, int], min_size: int, max_size: int, step: int) -> list[tuple[int, int]]:
    """Every (width, height) of about max_reso's area, sides multiples of ``step`` within [min_size, max_size]."""
    area = max_reso[0] * max_reso[1]
    side = int(math.sqrt(area) // step) * step
    resos = {(side, side)}
    width = min_size
    while width <= max_size:
        height = min(max_size, int((area // width) // step) * step)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += step
    return sorted(resos)


def _round_to_steps(x: float, step: int) -> int:
    x = int(x + 0.5)
    return x - x % step


def _no_upscale_size(width: int, height: int, max_area: int, step: int) -> tuple[int, int]:
    """bucket_no_upscale: shrink only, to the area limit, keeping the aspect ratio as closely as the steps allow."""
    ratio = width / height
    if width * height <= max_area:
        return width, height
    resized_w = math.sqrt(max_area * ratio)
    resized_h = max_area / resized_w
    b_w = _round_to_steps(resized_w, step)
    b_h_in_w = _round_to_steps(b_w / ratio, step)
    b_h = _round_to_steps(resized_h, step)
    b_w_in_h = _round_to_steps(b_h * ratio, step)
    if b_h_in_w and b_h and abs(b_w / b_h_in_w - ratio) < abs(b_w_in_h / b_h - ratio):
        return b_w, int(b_w / ratio + 0.5)
    return int(b_h * ratio + 0.5), b_h


def select_bucket(width: int, height: int, settings: BucketSettings) -> tuple[int, int]:
    """The (width, height) bucket this image trains at; the image is scaled to cover it and centre-cropped."""
    if not settings.enable_bucket:
        return settings.resolution
    step = settings.bucket_reso_steps
    if settings.bucket_no_upscale:
        area = settings.resolution[0] * settings.resolution[1]
        resized = _no_upscale_size(width, height, area, step)
        return max(step, resized[0] - resized[0] % step), max(step, resized[1] - resized[1] % step)
    resos = bucket_resolutions(settings.resolution, settings.min_bucket_reso, settings.max_bucket_reso, step)
    if (width, height) in resos:
        return width, height
    ratio = width / height
    return min(resos, key=lambda r: abs(r[0] / r[1] - ratio))


def adjust_bucket_limits(settings: BucketSettings, multiple: int = 64) -> tuple[BucketSettings, list[str]]:
    """sd-scripts rounds min/max to the step and requires min <= resolution <= max; here a too-tight limit is
    widened with a note instead (tiny test models train at 64 px, below kohya's default minimum of 256)."""
    if not settings.enable_bucket:
        return settings, []
    notes = []
    step = max(1, settings.bucket_reso_steps)
    if step % multiple:  # sd-scripts refuses this (64 for SD1/SD2, 32 for SDXL): the latents need it
        notes.append(
            f"bucket_reso_steps {step} is not a multiple of {multiple}, which kohya's TI script refuses; "
            f"using {multiple}."
        )
        step = multiple
    low = settings.min_bucket_reso - settings.min_bucket_reso % step
    high = settings.max_bucket_reso + (-settings.max_bucket_reso) % step
    if min(settings.resolution) < low:
        notes.append(f"min_bucket_reso {low} is above the resolution {min(settings.resolution)}; using the resolution.")
        low = min(settings.resolution) - min(settings.resolution) % step or step
    if max(settings.resolution) > high:
        notes.append(
            f"max_bucket_reso {high} is below the resolution {max(settings.resolution)}; using the resolution."
        )
        high = max(settings.resolution)
    adjusted = BucketSettings(settings.resolution, True, low, high, step, settings.bucket_no_upscale)
    return adjusted, notes
