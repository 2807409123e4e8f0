"""The noise and timesteps of each training sample, with sd-scripts' options: noise offset (random strength,
adaptive scale), multires (pyramid) noise, a timestep range, and input-perturbation noise."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from lib_ti.training.config import TrainConfig


def offset_noise(latents: torch.Tensor, noise: torch.Tensor, offset: float | torch.Tensor, adaptive: float = 0.0):
    """One random shift per image and channel (crosslabs' offset noise); ``adaptive`` adds
    |channel mean of the latents| × adaptive to the offset."""
    if adaptive:
        offset = torch.clamp(offset + adaptive * latents.mean(dim=(2, 3), keepdim=True).abs(), min=0.0)
    return noise + offset * torch.randn(latents.shape[0], latents.shape[1], 1, 1, device=latents.device)


def pyramid_noise(noise: torch.Tensor, iterations: int, discount: float) -> torch.Tensor:
    """Multires noise: noise at ever coarser scales (each 2–4× smaller) upsampled and added with weight
    discount^i, then scaled back to unit variance."""
    b, c, h, w = noise.shape
    noise = noise.clone()
    for i in range(iterations):
        r = float(torch.rand(1)) * 2 + 2
        hn, wn = max(1, int(h / (r**i))), max(1, int(w / (r**i)))
        coarse = torch.randn(b, c, hn, wn, device=noise.device, dtype=noise.dtype)
        noise += F.interpolate(coarse, size=(h, w), mode="bilinear") * discount**i
        if hn == 1 or wn == 1:
            break
    return noise / noise.std()


def make_noise(latents: torch.Tensor, config: "TrainConfig") -> torch.Tensor:
    """The noise the model learns to predict, as sd-scripts' get_noise_noisy_latents_and_timesteps makes it."""
    noise = torch.randn_like(latents)
    if config.noise_offset:
        offset = config.noise_offset
        if config.noise_offset_random_strength:
            offset = float(torch.rand(1)) * config.noise_offset
        noise = offset_noise(latents, noise, offset, config.adaptive_noise_scale)
    if config.multires_noise_iterations:
        noise = pyramid_noise(noise, config.multires_noise_iterations, config.multires_noise_discount)
    return noise


def sample_timesteps(batch: int, config: "TrainConfig", num_timesteps: int, device: torch.device) -> torch.Tensor:
    """Uniform in [min_timestep, max_timestep); a single value when they are equal."""
    low, high = config.min_timestep, min(config.max_timestep, num_timesteps)
    if low < high:
        return torch.randint(low, high, (batch,), device="cpu").to(device)
    return torch.full((batch,), min(high, num_timesteps - 1), dtype=torch.long, device=device)


def input_noise(noise: torch.Tensor, config: "TrainConfig") -> torch.Tensor:
    """ip_noise_gamma: the noisy latents get extra noise that the target does not contain (arXiv 2301.11706)."""
    if not config.ip_noise_gamma:
        return noise
    strength = config.ip_noise_gamma
    if config.ip_noise_gamma_random_strength:
        strength = float(torch.rand(1)) * config.ip_noise_gamma
    return noise + strength * torch.randn_like(noise)
