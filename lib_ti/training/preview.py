"""What a run will train on, before it starts: every image with its caption, repeats and bucket, the buckets'
batches and the steps they come to — the numbers kohya prints when it starts, for the tab and the API."""

from __future__ import annotations

import math
import os
import random
from typing import Any

from lib_ti.training.captions import kohya_caption, make_plan
from lib_ti.training.config import TrainConfig
from lib_ti.training.kohya import resolve_length
from lib_ti.training.layout import bucket_multiple, caption_options, dataset_specs, plan_dataset


def _dataset_rows(plan) -> list[dict[str, Any]]:
    rows = []
    for d, (spec, counts) in enumerate(zip(plan.specs, plan.bucket_counts())):
        images = [image for image in plan.images if image.dataset == d]
        buckets = []
        for (width, height), count in sorted(counts.items()):
            unique = sum(1 for image in images if image.bucket == (width, height))
            batches = math.ceil(count / spec.batch_size)
            buckets.append(
                {"width": width, "height": height, "images": unique, "with_repeats": count, "batches": batches}
            )
        subsets = [
            {
                "image_dir": subset.image_dir,
                "num_repeats": subset.num_repeats,
                "images": sum(1 for image in images if image.subset == s),
                "class_tokens": subset.class_tokens,
                "caption_extension": subset.caption_extension,
                "shuffle_caption": subset.shuffle_caption,
                "keep_tokens": subset.keep_tokens,
                "caption_dropout_rate": subset.caption_dropout_rate,
            }
            for s, subset in enumerate(spec.subsets)
        ]
        rows.append(
            {
                "batch_size": spec.batch_size,
                "resolution": list(spec.buckets.resolution),
                "enable_bucket": spec.buckets.enable_bucket,
                "buckets": buckets,
                "subsets": subsets,
            }
        )
    return rows


def preview_dataset(config: TrainConfig, native_resolution: int, limit: int = 500) -> dict[str, Any]:
    """The dataset plan and the length as plain data (JSON-ready). Reads image headers only."""
    specs, notes = dataset_specs(config, config.resolution or native_resolution)
    plan = plan_dataset(specs, bucket_multiple(native_resolution))
    length = resolve_length(config, plan)
    captions = make_plan(
        config.token_string or "[name]",
        config.caption_source,
        config.template_set,
        config.templates,
        [(s.step, s.templates) for s in config.stages],
    )
    rng = random.Random(0)
    images = []
    for image in plan.images[:limit]:
        subset = plan.specs[image.dataset].subsets[image.subset]
        handled = kohya_caption(image.caption, caption_options(subset), 1, rng)
        example = "" if handled is None else captions.caption(handled, 0, rng)
        images.append(
            {
                "path": image.path,
                "name": os.path.basename(image.path),
                "caption": image.caption,
                "caption_file": image.caption_file,
                "repeats": image.repeats,
                "bucket": list(image.bucket),
                "dataset": image.dataset,
                "example_prompt": example,
            }
        )
    return {
        "datasets": _dataset_rows(plan),
        "images": images,
        "images_count": len(plan.images),
        "images_with_repeats": plan.images_with_repeats,
        "batches_per_epoch": length.batches_per_epoch,
        "steps_per_epoch": length.steps_per_epoch,
        "max_train_steps": length.max_steps,
        "epochs": length.epochs,
        "explanation": length.explanation,
        "notes": notes + plan.notes,
    }
