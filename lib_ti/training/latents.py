"""Latents encoded once (flipped variants too) and batches drawn from them the way sd-scripts draws them: each
image as often as its repeats, batches within one bucket of one dataset (the last one smaller), all shuffled."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from lib_ti.training.captions import CaptionOptions, CaptionPlan, kohya_caption
from lib_ti.training.dataset import Dataset


@dataclass
class LatentCache:
    latents: list[list[torch.Tensor]]  # per image: [plain] or [plain, flipped], each (C, h, w)
    captions: list[str]
    buckets: dict[tuple[int, int, int], list[int]]  # (dataset, height, width) -> image indices
    repeats: list[int] = field(default_factory=list)
    options: list[CaptionOptions] = field(default_factory=list)

    @classmethod
    def build(cls, dataset: Dataset, adapter, flip: bool, chunk: int = 4) -> "LatentCache":
        """Run the VAE once per image (and once per flipped image); training never touches the VAE again."""
        latents: list[list[torch.Tensor]] = [[] for _ in dataset.items]
        buckets: dict[tuple[int, int, int], list[int]] = {}
        for i, item in enumerate(dataset.items):
            buckets.setdefault((item.dataset, *item.pixels.shape[1:]), []).append(i)
        step = max(1, chunk)
        with torch.no_grad():
            for indices in buckets.values():
                for start in range(0, len(indices), step):
                    part = indices[start : start + step]
                    pixels = torch.stack([dataset.items[i].pixels for i in part])
                    encoded = adapter.encode_images(pixels.to(adapter.device)).float()
                    flipped = [i for i in part if flip or dataset.items[i].flip]
                    for i, z in zip(part, encoded):
                        latents[i].append(z)
                    if flipped:
                        pixels = torch.stack([dataset.items[i].pixels for i in flipped]).flip(-1)
                        for i, z in zip(flipped, adapter.encode_images(pixels.to(adapter.device)).float()):
                            latents[i].append(z)
        items = dataset.items
        return cls(
            latents,
            [item.caption for item in items],
            buckets,
            [item.repeats for item in items],
            [item.options or CaptionOptions() for item in items],
        )


class BatchSampler:
    """One epoch = every image × its repeats once, in batches that share a dataset and a size."""

    def __init__(
        self,
        cache: LatentCache,
        plan: CaptionPlan,
        batch_size: int,
        rng: random.Random,
        batch_sizes: list[int] | None = None,
    ):
        self.cache, self.plan, self.batch_size, self.rng = cache, plan, batch_size, rng
        self.batch_sizes = batch_sizes or []
        self.queue: list[list[int]] = []
        self.epoch = 0  # sd-scripts counts epochs from 1; caption_dropout_every_n_epochs uses it

    def _size(self, dataset: int) -> int:
        return self.batch_sizes[dataset] if dataset < len(self.batch_sizes) else self.batch_size

    def epoch_batches(self) -> list[list[int]]:
        batches = []
        repeats = self.cache.repeats or [1] * len(self.cache.captions)
        for (dataset, _, _), indices in self.cache.buckets.items():
            order = [i for i in indices for _ in range(repeats[i])]
            self.rng.shuffle(order)
            size = self._size(dataset)
            batches += [order[i : i + size] for i in range(0, len(order), size)]
        self.rng.shuffle(batches)
        return batches

    def next_batch(self, step: int) -> tuple[torch.Tensor, list[str]]:
        if not self.queue:
            self.queue = self.epoch_batches()
            self.epoch += 1
        indices = self.queue.pop()
        latents = torch.stack([self.rng.choice(self.cache.latents[i]) for i in indices])
        return latents, [self._prompt(i, step) for i in indices]

    @property
    def epoch_ended(self) -> bool:
        """True right after the last batch of an epoch: sd-scripts steps the optimizer there, whatever the
        accumulation count."""
        return not self.queue

    def _prompt(self, index: int, step: int) -> str:
        options = self.cache.options[index] if self.cache.options else CaptionOptions()
        caption = kohya_caption(self.cache.captions[index], options, self.epoch, self.rng)
        if caption is None:
            return ""  # caption dropout: the sample trains on the empty prompt, as in kohya
        return self.plan.caption(caption, step, self.rng)
