"""Real training steps on tiny real networks (CLIPTextModel + UNet2DConditionModel + AutoencoderKL)."""

from __future__ import annotations

import csv
import math
import os

import pytest
import safetensors.torch
import torch

from helpers import tiny_model, train_values
from lib_ti.training.config import parse_config
from lib_ti.errors import UserError
from lib_ti.embeddings.files import load_embedding
from lib_ti.training.model import TrainOptions, init_vectors, spread_init
from lib_ti.training.trainer import Services, diffusion_loss, train

pytestmark = pytest.mark.training


def config(tmp_path, **overrides):
    values = train_values(tmp_path, **overrides)
    return parse_config(values).config


def run(tmp_path, model, services=None, **overrides):
    return train(config(tmp_path, **overrides), model, str(tmp_path / "emb"), str(tmp_path / "runs"), services)


def test_loss_falls_on_a_fixed_batch_and_only_the_vectors_change():
    model = tiny_model()
    before = model.weights_digest()
    vectors, _ = init_vectors(model, "painting", 2)
    leaves = {k: v.clone().requires_grad_(True) for k, v in vectors.items()}
    start = {k: v.detach().clone() for k, v in leaves.items()}
    optimizer = torch.optim.AdamW(leaves.values(), lr=0.05, weight_decay=0.0)
    torch.manual_seed(0)
    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([300, 700])
    alphas = model.alphas_cumprod()
    losses = []
    with model.training("mystyle", leaves, TrainOptions()):
        for _ in range(40):
            loss = diffusion_loss(model, alphas, latents, ["mystyle", "a mystyle painting"], noise, t)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.01 and max(losses[-5:]) < min(losses[:5]), losses
    assert model.weights_digest() == before
    assert all(p.grad is None for m in model.modules() for p in m.parameters())
    assert all(not torch.equal(start[k], leaves[k].detach()) for k in leaves)


def test_a_run_writes_the_embedding_checkpoints_log_and_previews(tmp_path):
    model = tiny_model()
    before = model.weights_digest()
    records = []
    result = run(tmp_path, model, Services(progress=records.append), sample_every_n_steps=2, num_vectors_per_token=3)
    assert result.state == "done" and result.step == 4
    assert result.final_path == str(tmp_path / "emb" / "mystyle.safetensors")
    tensors = safetensors.torch.load_file(result.final_path)  # what the WebUI does with a .safetensors embedding
    assert list(tensors) == ["emb_params"] and tensors["emb_params"].shape == (3, 32)
    run_dir = tmp_path / "runs" / "mystyle"
    assert sorted(p.name for p in run_dir.glob("mystyle-*.safetensors") if "optimizer" not in p.name) == [
        "mystyle-2.safetensors",
        "mystyle-4.safetensors",
    ]
    with open(run_dir / "mystyle-log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4] and all(float(r["lr"]) == 0.01 for r in rows)
    assert [r.step for r in records] == [1, 2, 3, 4]
    assert len(list((run_dir / "samples").glob("*.png"))) == 2
    assert model.weights_digest() == before
    _, meta = load_embedding(result.final_path)
    assert meta["step"] == "4" and meta["ti_model_family"] == "sd1" and meta["ti_vectors"] == "3"


def test_a_preview_the_webui_cannot_make_does_not_end_the_training(tmp_path):
    """Forge offline, without the SDXL live-preview model it downloads at the first generation: URLError."""
    model = tiny_model()

    def failing_sample(*args, **kwargs):
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    model.sample = failing_sample
    result = run(tmp_path, model, sample_every_n_steps=2)
    assert result.state == "done" and result.step == 4
    said = [m for m in result.messages if m.startswith("Previews could not be made (OSError")]
    assert len(said) == 1, result.messages  # once, though previews were due at steps 2 and 4
    assert os.path.exists(result.final_path)
    assert not list((tmp_path / "runs" / "mystyle").glob("samples/*.png"))


def test_sdxl_shaped_model_saves_clip_l_and_clip_g(tmp_path):
    result = run(tmp_path, tiny_model(two_encoders=True), num_vectors_per_token=2, max_train_steps=2)
    tensors = safetensors.torch.load_file(result.final_path)
    assert set(tensors) == {"clip_l", "clip_g"}
    assert tensors["clip_l"].shape == (2, 32) and tensors["clip_g"].shape == (2, 48)


def test_v_prediction_model_trains(tmp_path):
    result = run(tmp_path, tiny_model(prediction_type="v"), max_train_steps=2, save_model_as="pt")
    data = torch.load(result.final_path, weights_only=True)
    assert data["step"] == 2 and len(data["string_to_param"]) == 1


def test_resume_continues_the_step_count_with_the_optimizer_state(tmp_path):
    model = tiny_model()
    first = run(tmp_path, model, max_train_steps=2)
    messages = []
    second = run(
        tmp_path, model, Services(message=messages.append), max_train_steps=4, weights=first.final_path, overwrite=True
    )
    assert second.step == 4 and second.losses[0][0] == 3
    assert any("Loaded the optimizer state" in m for m in messages), messages
    assert any("Resuming from mystyle.safetensors at step 2" in m for m in messages)


def test_interrupt_keeps_the_current_embedding(tmp_path):
    model = tiny_model()
    calls = []

    def stop_after_two():
        calls.append(1)
        return len(calls) > 2

    result = run(tmp_path, model, Services(should_stop=stop_after_two), max_train_steps=10)
    assert result.state == "interrupted" and result.step == 2
    vectors, meta = load_embedding(result.final_path)
    assert meta["step"] == "2" and torch.isfinite(vectors["clip_l"]).all()


def test_nan_loss_stops_and_keeps_the_last_finite_vectors(tmp_path):
    model = tiny_model()
    predict = model.predict
    steps = []

    def poisoned(noisy, t, cond):
        steps.append(1)
        out = predict(noisy, t, cond)
        return out * float("nan") if len(steps) >= 3 else out

    model.predict = poisoned
    result = run(tmp_path, model, max_train_steps=6, save_every_n_steps=1)
    assert result.state == "failed" and result.step == 2
    assert "lower learning_rate" in result.message
    vectors, meta = load_embedding(result.final_path)
    checkpoint, _ = load_embedding(str(tmp_path / "runs" / "mystyle" / "mystyle-2.safetensors"))
    assert torch.isfinite(vectors["clip_l"]).all() and torch.equal(vectors["clip_l"], checkpoint["clip_l"])


def test_a_non_finite_text_encoder_output_is_named_with_its_prompt_instead_of_blaming_the_learning_rate(tmp_path):
    """A text encoder that turns finite vectors into NaN (the WebUI's emphasis divides by the output's mean, which a
    random-weight CLIP makes exactly 0 for some prompts) is not fixed by a lower learning rate: say what failed."""
    model = tiny_model()
    encode, calls, prompts = model.encode_text, [], []

    def poisoned(texts, size):
        calls.append(1)
        prompts.append(list(texts))
        out = encode(texts, size)
        return out * float("nan") if len(calls) >= 3 else out

    model.encode_text = poisoned
    result = run(tmp_path, model, max_train_steps=6)
    assert result.state == "failed" and result.step == 2
    assert "loss became nan at step 3" in result.message and "text encoder" in result.message
    assert repr(prompts[2][0]) in result.message and "lower learning_rate does not help" in result.message
    vectors, _ = load_embedding(result.final_path)
    assert torch.isfinite(vectors["clip_l"]).all()


def test_an_existing_embedding_is_not_overwritten_without_asking(tmp_path):
    (tmp_path / "emb").mkdir()
    existing = tmp_path / "emb" / "mystyle.safetensors"
    existing.write_bytes(b"precious")
    with pytest.raises(UserError, match="already exists"):
        run(tmp_path, tiny_model())
    assert existing.read_bytes() == b"precious"
    assert not (tmp_path / "runs").exists()


def test_init_word_that_tokenises_to_nothing_is_refused(tmp_path):
    with pytest.raises(UserError, match="tokenises to nothing"):
        run(tmp_path, tiny_model(), init_word="   ")


def test_weights_of_another_model_family_are_refused(tmp_path):
    sdxl = run(tmp_path / "a", tiny_model(two_encoders=True), max_train_steps=1)
    with pytest.raises(UserError, match="do not fit"):
        run(tmp_path / "b", tiny_model(), weights=sdxl.final_path)


@pytest.mark.parametrize("tokens,vectors", [(1, 4), (2, 4), (3, 3), (5, 2)])
def test_spread_init_uses_every_token(tokens, vectors):
    rows = torch.arange(tokens, dtype=torch.float32).unsqueeze(1).repeat(1, 3)
    out, note = spread_init(rows, vectors)
    assert out.shape == (vectors, 3)
    covered = set(out[:, 0].tolist())
    if tokens <= vectors:
        assert covered == set(range(tokens))
    else:
        assert out[:, 0].mean().item() == pytest.approx(rows[:, 0].mean().item(), rel=0.2)
    assert str(vectors) in note


def test_cpu_says_once_that_8bit_adam_and_mixed_precision_do_not_apply(tmp_path):
    messages = []
    result = run(
        tmp_path,
        tiny_model(),
        Services(message=messages.append),
        max_train_steps=1,
        use_8bit_adam=True,
        mixed_precision="bf16",
    )
    assert result.state == "done"
    assert sum("8-bit AdamW needs a CUDA GPU" in m for m in messages) == 1
    assert sum("applies on CUDA only" in m for m in messages) == 1


def test_early_stop_waits_for_the_smoothed_loss_to_stall():
    from lib_ti.training.early_stop import EarlyStop

    stop = EarlyStop(patience=50, min_delta=0.001)
    falling = [stop.update(step, 1.0 - step * 0.002) for step in range(1, 201)]
    assert not any(falling)
    reasons = [stop.update(step, 0.6) for step in range(201, 800)]
    first = next(i for i, r in enumerate(reasons) if r)  # the average still creeps down for a while after a stall
    assert 50 <= first < 450 and "has not improved" in reasons[first] and "Early stop at step" in reasons[first]


def test_early_stopping_ends_a_run_and_says_why(tmp_path):
    model = tiny_model()
    model.predict = lambda noisy, t, cond: torch.zeros_like(noisy) + 0 * cond.sum()  # a loss that cannot improve
    result = run(tmp_path, model, max_train_steps=500, early_stopping_patience=20, save_every_n_steps=0)
    assert result.state == "done" and result.step < 500 and "Early stop at step" in result.message
    assert os.path.isfile(result.final_path)


def test_an_unusable_run_folder_is_a_clear_message_and_nothing_is_written(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="Cannot create the folder"):
        run(tmp_path, tiny_model(), output_dir=str(tmp_path / "afile" / "run"))
    assert not (tmp_path / "emb").exists() or not any((tmp_path / "emb").iterdir())


def test_losses_read_back_in_batches_are_reported_in_order_and_a_nan_ends_at_the_step_before(tmp_path, monkeypatch):
    """The CUDA path (a host sync every few steps, not every step), forced on the CPU."""
    from lib_ti.embeddings.files import load_optimizer_state
    from lib_ti.training import readback

    monkeypatch.setitem(readback.READBACK_EVERY, "cpu", 4)
    monkeypatch.setattr(readback, "READBACK_SECONDS", 1e9)
    model = tiny_model()
    predict, calls = model.predict, []

    def poisoned(noisy, t, cond):
        calls.append(1)
        out = predict(noisy, t, cond)
        return out * float("nan") if len(calls) == 7 else out

    model.predict = poisoned
    seen = []  # (step reported, steps already computed when it was reported)
    services = Services(progress=lambda record: seen.append((record.step, len(calls))))
    result = run(tmp_path, model, services, max_train_steps=10, save_every_n_steps=6)
    # read back after 4 steps, at the checkpoint (6), then after 7..10, where step 7's NaN is found
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4), (5, 6), (6, 6)]
    assert len(calls) == 10 and result.state == "failed" and result.step == 6
    assert "loss became nan at step 7" in result.message and "(step 6)" in result.message
    assert [s for s, _ in result.losses] == [1, 2, 3, 4, 5, 6] and all(math.isfinite(v) for _, v in result.losses)
    run_dir = tmp_path / "runs" / "mystyle"
    final, meta = load_embedding(result.final_path)
    at_six, _ = load_embedding(str(run_dir / "mystyle-6.safetensors"))
    assert meta["step"] == "6" and torch.equal(final["clip_l"], at_six["clip_l"])
    with open(run_dir / "mystyle-log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5, 6]
    state = load_optimizer_state(str(run_dir / "mystyle-6.optimizer.safetensors"), final)
    assert state is not None and all(
        torch.isfinite(t).all() for s in state["state"].values() for t in s.values() if torch.is_tensor(t)
    )


def test_an_early_stop_found_in_a_batch_ends_at_its_own_step(tmp_path, monkeypatch):
    from lib_ti.training import readback

    monkeypatch.setitem(readback.READBACK_EVERY, "cpu", 7)
    monkeypatch.setattr(readback, "READBACK_SECONDS", 1e9)
    model, calls = tiny_model(), []

    def flat(noisy, t, cond):  # a loss that cannot improve
        calls.append(1)
        return torch.zeros_like(noisy) + 0 * cond.sum()

    model.predict = flat
    result = run(tmp_path, model, max_train_steps=500, early_stopping_patience=20, save_every_n_steps=0)
    stopped = int(result.message.split("Early stop at step ")[1].split(":")[0])
    assert len(calls) % 7 == 0 and len(calls) > stopped  # found in a batch read after later steps were done
    assert result.state == "done" and result.step == stopped and result.losses[-1][0] == stopped
    _, meta = load_embedding(result.final_path)
    assert meta["step"] == str(stopped)


def test_optimizer_state_saved_with_fused_adamw_resumes_on_the_cpu():
    """A state saved on CUDA records fused=True; the CPU optimizer keeps its own implementation flags."""
    from lib_ti.training.optim import keep_own_settings

    vector = torch.zeros(2, 4, requires_grad=True)
    optimizer = torch.optim.AdamW([vector], lr=1e-3)
    vector.grad = torch.ones_like(vector)
    optimizer.step()
    state = optimizer.state_dict()
    state["param_groups"][0]["fused"] = True  # as saved by a CUDA run
    fresh = torch.optim.AdamW([vector], lr=1e-3)
    fresh.load_state_dict(keep_own_settings(state, fresh))
    assert not fresh.param_groups[0].get("fused")
    assert fresh.param_groups[0]["lr"] == 1e-3
    fresh.step()  # fails with fused=True on CPU tensors in torch < 2.4
    assert int(fresh.state[vector]["step"]) == 2


def test_a_run_says_what_its_preparation_and_its_steps_cost(tmp_path):
    messages = []
    result = run(tmp_path, tiny_model(), Services(message=messages.append), max_train_steps=2, flip_aug=True)
    assert result.state == "done"
    encoded = [m for m in messages if "encoded once with the VAE" in m]
    assert len(encoded) == 1 and encoded[0].startswith("Images read in ")
    assert " 8 latent(s) " in encoded[0]  # the helper's 4 images, each also flipped
    assert "s of steps." in result.message
