"""Latents encoded once (flipped variants too) and batches drawn from them, one bucket size per batch."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from lib_ti.training.captions import CaptionPlan
from lib_ti.training.dataset import Dataset


@dataclass
class LatentCache:
    latents: list[list[torch.Tensor]]  # per image: [plain] or [plain, flipped], each (C, h, w)
    captions: list[str]
    buckets: dict[tuple[int, int], list[int]]

    @classmethod
    def build(cls, dataset: Dataset, adapter, flip: bool, chunk: int = 4) -> "LatentCache":
        """Run the VAE once per image (and once per flipped image); training never touches the VAE again."""
        latents: list[list[torch.Tensor]] = [[] for _ in dataset.items]
        buckets = dataset.buckets()
        with torch.no_grad():
            for indices in buckets.values():
                for start in range(0, len(indices), max(1, chunk)):
                    part = indices[start : start + max(1, chunk)]
                    pixels = torch.stack([dataset.items[i].pixels for i in part])
                    variants = [pixels, pixels.flip(-1)] if flip else [pixels]
                    for variant in variants:
                        encoded = adapter.encode_images(variant.to(adapter.device)).float()
                        for i, z in zip(part, encoded):
                            latents[i].append(z)
        return cls(latents, [item.caption for item in dataset.items], buckets)


class BatchSampler:
    """Each epoch visits every image once, in random batches that share a size."""

    def __init__(self, cache: LatentCache, plan: CaptionPlan, batch_size: int, rng: random.Random):
        self.cache, self.plan, self.batch_size, self.rng = cache, plan, batch_size, rng
        self.queue: list[list[int]] = []

    def _epoch(self) -> list[list[int]]:
        batches = []
        for indices in self.cache.buckets.values():
            order = list(indices)
            self.rng.shuffle(order)
            while len(order) % self.batch_size:
                order.append(self.rng.choice(indices))
            batches += [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        self.rng.shuffle(batches)
        return batches

    def next_batch(self, step: int) -> tuple[torch.Tensor, list[str]]:
        if not self.queue:
            self.queue = self._epoch()
        indices = self.queue.pop()
        latents = torch.stack([self.rng.choice(self.cache.latents[i]) for i in indices])
        prompts = [self.plan.caption(self.cache.captions[i], step, self.rng) for i in indices]
        return latents, prompts
