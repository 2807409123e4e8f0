"""sd-scripts' loop options on the tiny real networks: each changes what it should, and a kohya folder trains the
steps kohya counts."""

from __future__ import annotations

import os
import random

import pytest
import torch

from helpers import tiny_model
from lib_ti.training.captions import CaptionOptions, kohya_caption, make_plan
from lib_ti.training.config import TrainConfig, parse_config
from lib_ti.training.latents import BatchSampler, LatentCache
from lib_ti.training.loss import huber_threshold, per_sample_loss, snr
from lib_ti.training.model import TrainOptions, init_vectors
from lib_ti.training.noise import input_noise, make_noise, pyramid_noise, sample_timesteps
from lib_ti.training.trainer import diffusion_loss, train
from test_kohya_layout import kohya_folder

ALPHAS = torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2, dim=0)


def cfg(**values) -> TrainConfig:
    return TrainConfig(**values)


def channel_mean_spread(noise: torch.Tensor) -> float:
    return noise.mean(dim=(2, 3)).std().item()


def test_noise_offset_shifts_whole_channels_and_adaptive_scales_with_the_latents():
    torch.manual_seed(0)
    latents = torch.zeros(64, 4, 16, 16)
    plain = channel_mean_spread(make_noise(latents, cfg()))
    shifted = channel_mean_spread(make_noise(latents, cfg(noise_offset=0.5)))
    assert plain < 0.15 and shifted > 0.35
    bright = torch.full((64, 4, 16, 16), 4.0)
    adaptive = channel_mean_spread(make_noise(bright, cfg(noise_offset=0.1, adaptive_noise_scale=0.2)))
    assert adaptive > 0.6  # 0.1 + 0.2 × |4| = 0.9
    random_strength = channel_mean_spread(make_noise(latents, cfg(noise_offset=0.5, noise_offset_random_strength=True)))
    assert random_strength < shifted + 0.1


def test_multires_noise_is_smoother_with_unit_variance():
    torch.manual_seed(0)
    white = torch.randn(8, 4, 32, 32)
    pyramid = pyramid_noise(white, 6, 0.8)

    def neighbour_corr(x):
        return torch.corrcoef(torch.stack([x[..., :-1].flatten(), x[..., 1:].flatten()]))[0, 1].item()

    assert neighbour_corr(pyramid) > neighbour_corr(white) + 0.2
    assert abs(pyramid.std().item() - 1) < 1e-4
    assert make_noise(torch.zeros(2, 4, 8, 8), cfg(multires_noise_iterations=4)).std().item() == pytest.approx(1, 1e-4)


def test_timestep_range():
    t = sample_timesteps(500, cfg(min_timestep=200, max_timestep=300), 1000, torch.device("cpu"))
    assert int(t.min()) >= 200 and int(t.max()) < 300
    fixed = sample_timesteps(4, cfg(min_timestep=500, max_timestep=500), 1000, torch.device("cpu"))
    assert fixed.tolist() == [500] * 4


def test_ip_noise_changes_the_input_not_the_target():
    torch.manual_seed(0)
    noise = torch.randn(2, 4, 8, 8)
    assert torch.equal(input_noise(noise, cfg()), noise)
    perturbed = input_noise(noise, cfg(ip_noise_gamma=0.1))
    assert 0.05 < (perturbed - noise).std().item() < 0.15


def test_huber_thresholds_follow_the_schedules():
    t = torch.tensor([0, 999])
    assert huber_threshold(cfg(huber_c=0.1, huber_schedule="constant"), ALPHAS, t).tolist() == pytest.approx([0.1] * 2)
    exp = huber_threshold(cfg(huber_c=0.1, huber_schedule="exponential"), ALPHAS, t)
    assert exp[0].item() == pytest.approx(1.0) and exp[1].item() == pytest.approx(0.1, rel=0.01)
    by_snr = huber_threshold(cfg(huber_c=0.1, huber_schedule="snr"), ALPHAS, t)
    assert by_snr[0].item() > 0.9 and by_snr[1].item() == pytest.approx(0.1, abs=0.01)


def test_loss_types_and_weights():
    pred, target = torch.zeros(2, 4, 8, 8), torch.full((2, 4, 8, 8), 3.0)
    t = torch.tensor([10, 900])
    l2 = per_sample_loss(pred, target, t, ALPHAS, cfg(), False)
    assert l2.tolist() == pytest.approx([9.0, 9.0])
    assert per_sample_loss(pred, target, t, ALPHAS, cfg(loss_type="l1"), False).tolist() == pytest.approx([3.0] * 2)
    huber = per_sample_loss(pred, target, t, ALPHAS, cfg(loss_type="huber", huber_schedule="constant"), False)
    assert huber.tolist() == pytest.approx([2 * 0.1 * ((9 + 0.01) ** 0.5 - 0.1)] * 2)  # linear, not squared
    smooth = per_sample_loss(pred, target, t, ALPHAS, cfg(loss_type="smooth_l1", huber_schedule="constant"), False)
    assert smooth.tolist() == pytest.approx([2 * ((9 + 0.01) ** 0.5 - 0.1)] * 2)
    s = snr(ALPHAS, t)
    weighted = per_sample_loss(pred, target, t, ALPHAS, cfg(min_snr_gamma=5), False)
    assert weighted.tolist() == pytest.approx((9 * torch.clamp(s, max=5) / s).tolist())
    assert weighted[0] < 9 and weighted[1] == pytest.approx(9)  # only the low-noise step is damped
    v_weighted = per_sample_loss(pred, target, t, ALPHAS, cfg(min_snr_gamma=5), True)
    assert v_weighted.tolist() == pytest.approx((9 * torch.clamp(s, max=5) / (s + 1)).tolist())
    scaled = per_sample_loss(pred, target, t, ALPHAS, cfg(scale_v_pred_loss_like_noise_pred=True), True)
    assert scaled.tolist() == pytest.approx((9 * s / (s + 1)).tolist())
    added = per_sample_loss(pred, target, t, ALPHAS, cfg(v_pred_like_loss=0.5), False)
    assert added.tolist() == pytest.approx((9 + 9 / (s / (s + 1)) * 0.5).tolist())


@pytest.mark.parametrize(
    "option",
    [
        {"loss_type": "huber"},
        {"loss_type": "smooth_l1"},
        {"loss_type": "l1"},
        {"min_snr_gamma": 5.0},
        {"v_pred_like_loss": 0.2},
        {"scale_v_pred_loss_like_noise_pred": True},
    ],
)
def test_each_loss_option_changes_the_tiny_models_loss_and_still_trains_the_vectors(option):
    model = tiny_model()
    vectors, _ = init_vectors(model, "painting", 1)
    leaves = {k: v.clone().requires_grad_(True) for k, v in vectors.items()}
    torch.manual_seed(0)
    latents, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([50, 600])
    alphas = model.alphas_cumprod()
    with model.training("mystyle", leaves, TrainOptions()):
        base = diffusion_loss(model, alphas, latents, ["mystyle"] * 2, noise, t, cfg())
        other = diffusion_loss(model, alphas, latents, ["mystyle"] * 2, noise, t, cfg(**option))
        other.backward()
    assert other.item() != pytest.approx(base.item(), rel=1e-3)
    assert all(torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0 for v in leaves.values())


def test_ip_noise_on_the_tiny_model_changes_the_loss():
    model = tiny_model()
    torch.manual_seed(0)
    latents, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([50, 600])
    with torch.no_grad():
        base = diffusion_loss(model, model.alphas_cumprod(), latents, ["a"] * 2, noise, t, cfg())
        torch.manual_seed(1)
        noised = input_noise(noise, cfg(ip_noise_gamma=0.5))
        other = diffusion_loss(model, model.alphas_cumprod(), latents, ["a"] * 2, noise, t, cfg(), noised)
    assert other.item() != pytest.approx(base.item(), rel=1e-4)


def test_caption_shuffle_keep_tokens_dropout():
    rng = random.Random(0)
    text = "mystyle, red, green, blue, yellow, cyan"
    keep = CaptionOptions(shuffle=True, keep_tokens=1)
    outs = {kohya_caption(text, keep, 1, rng) for _ in range(30)}
    assert len(outs) > 5 and all(o.startswith("mystyle, ") for o in outs)
    assert {frozenset(o.split(", ")) for o in outs} == {frozenset(text.split(", "))}
    assert kohya_caption(text, CaptionOptions(), 1, rng) == text  # no shuffle: untouched
    assert kohya_caption(text, CaptionOptions(dropout_rate=1.0), 1, rng) is None
    every = CaptionOptions(dropout_every_n_epochs=2)
    assert kohya_caption(text, every, 1, rng) == text and kohya_caption(text, every, 2, rng) is None
    sep = CaptionOptions(shuffle=True, keep_tokens_separator="|||")
    assert kohya_caption("a, b ||| c, d ||| e", sep, 1, rng).startswith("a, b, ")
    assert kohya_caption("x", CaptionOptions(prefix="pre", suffix="post"), 1, rng) == "pre x post"


def test_sampler_repeats_smaller_last_batch_and_dropout_gives_empty_prompts():
    cache = LatentCache(
        [[torch.zeros(4, 2, 2)], [torch.ones(4, 2, 2)]],
        ["mystyle, a", "mystyle, b"],
        {(0, 16, 16): [0, 1]},
        [3, 2],
        [CaptionOptions(), CaptionOptions(dropout_rate=1.0)],
    )
    plan = make_plan("mystyle", "captions", "style", [], [])
    sampler = BatchSampler(cache, plan, 2, random.Random(0))
    batches = sampler.epoch_batches()
    assert sorted(len(b) for b in batches) == [1, 2, 2]
    assert sorted(i for b in batches for i in b) == [0, 0, 0, 1, 1]
    prompts, ends = [], []
    for _ in range(3):
        latents, batch_prompts = sampler.next_batch(0)
        prompts += [(float(latent.mean()), p) for latent, p in zip(latents, batch_prompts)]
        ends.append(sampler.epoch_ended)
    assert ends == [False, False, True] and sampler.epoch == 1
    assert {p for mean, p in prompts if mean == 1.0} == {""} and {p for mean, p in prompts if mean == 0.0} == {
        "mystyle, a"
    }


def test_kohya_folder_trains_the_counted_steps_with_epoch_saves_and_sample_options(tmp_path):
    folder = kohya_folder(str(tmp_path), count=3, repeats=2, caption="mystyle, a tree", size=(64, 64))
    config = parse_config(
        {
            "train_data_dir": folder, "token_string": "mystyle", "init_word": "painting", "train_batch_size": 2,
            "max_train_epochs": 2, "max_train_steps": 0, "save_every_n_epochs": 1, "save_every_n_steps": 0,
            "sample_every_n_epochs": 1, "sample_prompts": "mystyle tree --n ugly --w 64 --h 128 --d 7 --s 3 --l 4",
            "learning_rate": "0.01", "seed": 1, "min_snr_gamma": 5, "noise_offset": 0.05,
            "caption_extension": ".caption",
        }
    ).config  # fmt: skip
    model = tiny_model()
    result = train(config, model, str(tmp_path / "emb"), str(tmp_path / "runs"))
    assert result.state == "done" and result.step == 6  # 3 images × 2 repeats / batch 2 = 3 steps × 2 epochs
    names = sorted(os.path.basename(f) for f in result.files if f.endswith(".safetensors") and "optimizer" not in f)
    assert names == ["mystyle-3.safetensors", "mystyle-6.safetensors", "mystyle.safetensors"]
    assert any("max_train_epochs 2 × 3 steps per epoch" in m for m in result.messages)
    assert len(model.sampled) == 2  # the end of each epoch
    prompt, options = model.sampled[0]
    assert prompt == "mystyle tree" and options.negative_prompt == "ugly"
    assert (options.width, options.height, options.seed, options.steps, options.cfg_scale) == (64, 128, 7, 3, 4.0)


def test_accumulation_steps_at_epoch_ends(tmp_path):
    folder = kohya_folder(str(tmp_path), count=3, repeats=1, caption="mystyle", size=(64, 64))
    config = parse_config(
        {
            "train_data_dir": folder, "token_string": "mystyle", "init_word": "painting", "train_batch_size": 1,
            "gradient_accumulation_steps": 2, "max_train_epochs": 2, "max_train_steps": 0, "save_every_n_steps": 0,
            "caption_extension": ".caption", "seed": 2,
        }
    ).config  # fmt: skip
    result = train(config, tiny_model(), str(tmp_path / "emb"), str(tmp_path / "runs"))
    assert result.step == 4  # ceil(3 batches / 2) = 2 steps per epoch
