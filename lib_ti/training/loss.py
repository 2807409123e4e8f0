"""The training loss with sd-scripts' options: l2/l1/huber/smooth_l1 (huber_c with a constant, exponential or
SNR schedule), min-SNR weighting, v-prediction scaling and the v-prediction-like term."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from lib_ti.training.config import TrainConfig
    from lib_ti.training.model import ModelAdapter


def snr(alphas: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at each timestep."""
    a = alphas[t]
    return a / (1 - a)


def huber_threshold(config: "TrainConfig", alphas: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if config.huber_schedule == "exponential":
        alpha = -math.log(config.huber_c) / alphas.shape[0]
        return torch.exp(-alpha * t.float())
    if config.huber_schedule == "snr":
        a = alphas[t]
        sigmas = ((1.0 - a) / a) ** 0.5
        return (1 - config.huber_c) / (1 + sigmas) ** 2 + config.huber_c
    return torch.full(t.shape, config.huber_c, device=t.device)


def elementwise_loss(pred: torch.Tensor, target: torch.Tensor, config: "TrainConfig", alphas, t) -> torch.Tensor:
    if config.loss_type == "l1":
        return F.l1_loss(pred, target, reduction="none")
    if config.loss_type in ("huber", "smooth_l1"):
        c = huber_threshold(config, alphas, t).view(-1, *([1] * (pred.ndim - 1))).to(pred.dtype)
        root = torch.sqrt((pred - target) ** 2 + c**2) - c
        return 2 * c * root if config.loss_type == "huber" else 2 * root
    return F.mse_loss(pred, target, reduction="none")


def _v_scale(alphas: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    s = torch.clamp(snr(alphas, t), max=1000)  # at t=0 the SNR is huge; sd-scripts caps it at 1000
    return s / (s + 1)


def per_sample_loss(
    pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor, alphas: torch.Tensor, config: "TrainConfig", v: bool
) -> torch.Tensor:
    """(batch,) losses, weighted the way sd-scripts' train_textual_inversion weights them, in its order."""
    loss = elementwise_loss(pred.float(), target.float(), config, alphas, t).mean(dim=[1, 2, 3])
    if config.min_snr_gamma:
        s = snr(alphas, t)
        loss = loss * torch.minimum(s, torch.full_like(s, config.min_snr_gamma)) / (s + 1 if v else s)
    if config.scale_v_pred_loss_like_noise_pred:
        loss = loss * _v_scale(alphas, t)
    if config.v_pred_like_loss:
        loss = loss + loss / _v_scale(alphas, t) * config.v_pred_like_loss
    return loss


def diffusion_loss(
    adapter: "ModelAdapter",
    alphas: torch.Tensor,
    latents: torch.Tensor,
    prompts: list[str],
    noise: torch.Tensor,
    t: torch.Tensor,
    config: "TrainConfig | None" = None,
    noised_with: torch.Tensor | None = None,
) -> torch.Tensor:
    """The model's own training objective: the error to the noise (eps models) or to v (v-prediction models),
    MSE unless ``config`` asks for kohya's loss options. ``noised_with``: input-perturbed noise for the input."""
    a = alphas[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * latents + (1 - a).sqrt() * (noise if noised_with is None else noised_with)
    target = noise if adapter.prediction_type == "eps" else a.sqrt() * noise - (1 - a).sqrt() * latents
    cond = adapter.encode_text(prompts, (latents.shape[2] * 8, latents.shape[3] * 8))
    pred = adapter.predict(noisy, t, cond)
    if config is None:
        return F.mse_loss(pred.float(), target.float())
    return per_sample_loss(pred, target, t, alphas, config, adapter.prediction_type == "v").mean()
