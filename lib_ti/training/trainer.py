"""The training run, top to bottom: check, read the data, start the vectors, train, save.

Everything the WebUI provides comes in through a ``ModelAdapter`` and ``Services``; nothing here imports it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from lib_ti import __version__
from lib_ti.training.latents import BatchSampler, LatentCache
from lib_ti.training.captions import make_plan
from lib_ti.training.config import TrainConfig, config_to_json
from lib_ti.training.dataset import load_dataset
from lib_ti.training.early_stop import EarlyStop
from lib_ti.errors import UserError
from lib_ti.embeddings.files import (
    atomic_write_bytes,
    load_embedding,
    load_optimizer_state,
    make_folder,
    save_embedding,
    save_optimizer_state,
)
from lib_ti.training.model import ModelAdapter, TrainOptions, init_vectors
from lib_ti.training.optim import keep_own_settings, make_optimizer
from lib_ti.training.paths import RunPaths, plan_paths
from lib_ti.training.run_state import RunState, cut_log, record_state, training_here
from lib_ti.training.schedule import LRSchedule

log = logging.getLogger(__name__)


@dataclass
class StepRecord:
    """One progress record per optimizer step; the glue maps it onto the WebUI's progress bar and the log."""

    step: int
    max_steps: int
    loss: float
    lr: float
    elapsed: float
    eta: float
    prompt: str = ""


@dataclass
class Services:
    """What the run needs from its host; defaults make it runnable anywhere."""

    progress: Callable[[StepRecord], None] = lambda record: None
    should_stop: Callable[[], bool] = lambda: False
    message: Callable[[str], None] = lambda text: None
    samples: Callable[[int, list[Image.Image], list[str]], None] = lambda step, images, paths: None


@dataclass
class TrainResult:
    state: str  # done | interrupted | failed
    step: int
    final_path: str
    files: list[str] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)
    message: str = ""
    messages: list[str] = field(default_factory=list)
    run_dir: str = ""


class _Run:
    """State shared by the phases of one run."""

    def __init__(self, config: TrainConfig, adapter: ModelAdapter, paths: RunPaths, services: Services):
        self.config, self.adapter, self.paths, self.services = config, adapter, paths, services
        self.messages: list[str] = []
        self.files: list[str] = []
        self.losses: list[tuple[int, float]] = []
        self.step = 0
        self.vectors: dict[str, torch.Tensor] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self.record: RunState | None = None

    def say(self, text: str) -> None:
        log.info(text)
        self.messages.append(text)
        self.services.message(text)


def train(
    config: TrainConfig,
    adapter: ModelAdapter,
    embeddings_dir: str,
    run_root: str,
    services: Services | None = None,
    existing_embeddings: set[str] | None = None,
) -> TrainResult:
    """Train one embedding. Raises UserError for bad input before anything is written."""
    services = services or Services()
    paths = plan_paths(config, embeddings_dir, run_root, existing_embeddings or set())
    run = _Run(config, adapter, paths, services)
    if config.model_name_or_path and not _same_model(config.model_name_or_path, adapter.model_name):
        run.say(
            f"model_name_or_path names {config.model_name_or_path!r}, but training uses the loaded model "
            f"{adapter.model_name!r}."
        )
    seed = config.seed if config.seed >= 0 else random.randrange(2**31)
    torch.manual_seed(seed)
    rng = random.Random(seed)

    # read the images and encode them once with the VAE
    resolution = config.resolution or adapter.native_resolution
    dataset = load_dataset(config.train_data_dir, resolution, config.caption_extension, config.enable_bucket)
    for note in dataset.notes:
        run.say(note)
    run.say(
        f"{len(dataset.items)} image(s) at {resolution} px, seed {seed}, {adapter.family} model {adapter.model_name}."
    )
    cache = LatentCache.build(dataset, adapter, config.flip_aug, config.train_batch_size)

    # start the vectors: from an earlier embedding, or from the init word
    _start_vectors(run)
    if run.step >= config.max_train_steps:
        raise UserError(f"The embedding is already trained to step {run.step}; raise max_train_steps above it.")
    make_folder(paths.run_dir)
    atomic_write_bytes(paths.config_file, config_to_json(config).encode("utf-8"))
    if config.weights:
        cut_log(paths.log_file, run.step)
    run.record = RunState("running", paths.name, paths.run_dir, paths.final, run.step, config.max_train_steps)
    run.record.config, run.record.checkpoint = config.to_dict(), config.weights
    with training_here(run.record):
        record_state(run.record, "running", run.step)
        try:
            state, message, final = _train_vectors(run, cache, rng)
        except BaseException as e:  # the state file must not say 'running' for a run that is over
            record_state(run.record, "failed", run.step, f"{type(e).__name__}: {e}")
            raise
        record_state(run.record, state, run.step, message, final)
    run.say(message)
    return TrainResult(state, run.step, final, run.files, run.losses, message, run.messages, paths.run_dir)


def _train_vectors(run: _Run, cache: LatentCache, rng: random.Random) -> tuple[str, str, str]:
    """The optimizer, the caption plan and the loop, inside the model's training mode; (state, message, file)."""
    config, adapter = run.config, run.adapter
    leaves = {k: v.to(adapter.device).requires_grad_(True) for k, v in run.vectors.items()}
    run.vectors = leaves
    if config.mixed_precision != "no" and adapter.device.type != "cuda":
        run.say(
            f"mixed_precision '{config.mixed_precision}' applies on CUDA only; training in full precision on "
            f"{adapter.device.type}."
        )
    run.optimizer, note = make_optimizer(list(leaves.values()), config.use_8bit_adam, adapter.device)
    if note:
        run.say(note)
    _load_optimizer(run)
    plan = make_plan(
        config.token_string,
        config.caption_source,
        config.template_set,
        config.templates,
        [(s.step, s.templates) for s in config.stages],
    )
    sampler = BatchSampler(cache, plan, config.train_batch_size, rng)
    options = TrainOptions(config.gradient_checkpointing, config.mixed_precision, config.offload_vae)
    with adapter.training(config.token_string, leaves, options):
        state, message = _loop(run, sampler)
        final = _save(run, run.paths.final, checkpoint=False)
    return state, message, final


def _same_model(named: str, loaded: str) -> bool:
    stem = os.path.splitext(os.path.basename(named.replace("\\", "/")))[0].lower()
    return bool(stem) and stem in loaded.lower()


def _start_vectors(run: _Run) -> None:
    config, adapter = run.config, run.adapter
    if config.weights:
        vectors, meta = load_embedding(config.weights)
        if set(vectors) != set(adapter.embedding_dims) or any(
            vectors[k].shape[-1] != d for k, d in adapter.embedding_dims.items()
        ):
            shapes = {k: tuple(v.shape) for k, v in vectors.items()}
            raise UserError(
                f"weights {config.weights!r} has vectors {shapes}, which do not fit the loaded "
                f"{adapter.family} model (width {adapter.embedding_dims})."
            )
        run.vectors = {k: v.clone() for k, v in vectors.items()}
        run.step = int(meta.get("step") or meta.get("ti_step") or 0)
        count = next(iter(vectors.values())).shape[0]
        if count != config.num_vectors_per_token:
            run.say(
                f"Resuming with the file's {count} vector(s); "
                f"num_vectors_per_token {config.num_vectors_per_token} ignored."
            )
        run.say(f"Resuming from {os.path.basename(config.weights)} at step {run.step}.")
        return
    run.vectors, note = init_vectors(adapter, config.init_word, config.num_vectors_per_token)
    run.say(note)


def _load_optimizer(run: _Run) -> None:
    if not run.config.weights:
        return
    stem = os.path.splitext(run.config.weights)[0]
    candidates = [stem + ".optimizer.safetensors", run.paths.optimizer_file(run.step)]
    for path in candidates:
        state = load_optimizer_state(path, run.vectors)
        if state is not None:
            run.optimizer.load_state_dict(keep_own_settings(state, run.optimizer))
            run.say(f"Loaded the optimizer state saved with that embedding ({os.path.basename(path)}).")
            return
    run.say("No matching optimizer state was found; the optimizer starts fresh.")


def _loop(run: _Run, sampler: BatchSampler) -> tuple[str, str]:
    """The optimizer steps. Returns (state, message); the vectors always end finite."""
    config, adapter, services = run.config, run.adapter, run.services
    schedule = LRSchedule(
        config.learning_rate,
        config.max_train_steps,
        config.lr_scheduler,
        config.lr_warmup_steps,
        config.lr_scheduler_num_cycles,
        config.lr_scheduler_power,
    )
    alphas = adapter.alphas_cumprod().to(adapter.device, torch.float32)
    scaler = (
        torch.cuda.amp.GradScaler() if (config.mixed_precision == "fp16" and adapter.device.type == "cuda") else None
    )
    steps = _Steps(run)
    while run.step < config.max_train_steps:
        if services.should_stop():
            end = steps.read()
            return end or ("interrupted", f"Interrupted at step {run.step}; the embedding was saved as it was.")
        lr = schedule.rate(run.step)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        loss, prompt = _accumulate(run, sampler, alphas, scaler)
        _optimizer_step(run, scaler)
        run.step += 1
        steps.add(loss, lr, prompt)
        if steps.due():
            end = steps.read()
            if end:
                return end
    return "done", f"Trained {run.config.token_string!r} to step {run.step}."


# On CUDA the host reads the losses back (one sync, which stalls the GPU's queue) every this many steps, or sooner
# when READBACK_SECONDS have passed or a checkpoint, preview or the last step is due; elsewhere every step.
READBACK_EVERY = {"cuda": 16}
READBACK_SECONDS = 2.0


@dataclass
class _Pending:
    step: int
    check: torch.Tensor  # [loss, vectors all finite], still on the device
    lr: float
    prompt: str
    vectors: dict[str, torch.Tensor]  # a copy of the vectors after this step


class _Steps:
    """Steps done on the device, read back in batches; then each is checked, logged and reported in order.

    A non-finite loss or vector found in a batch puts the vectors back to the step before it; an early stop puts
    them back to the step it names. Either way the run ends at that step, as if each step had been read at once.
    """

    def __init__(self, run: _Run):
        config = run.config
        self.run, self.every = run, READBACK_EVERY.get(run.adapter.device.type, 1)
        self.pending: list[_Pending] = []
        self.good = {k: v.detach().clone() for k, v in run.vectors.items()}  # after the last step read back
        self.start_step, self.started = run.step, time.time()
        self.read_at = self.started
        self.early = (
            EarlyStop(config.early_stopping_patience, config.early_stopping_min_delta)
            if config.early_stopping_patience
            else None
        )

    def add(self, loss: torch.Tensor, lr: float, prompt: str) -> None:
        vectors = {k: v.detach().clone() for k, v in self.run.vectors.items()}
        finite = torch.stack([torch.isfinite(v).all() for v in vectors.values()]).all()
        check = torch.stack([loss.detach().float().reshape(()), finite.float()])
        self.pending.append(_Pending(self.run.step, check, lr, prompt, vectors))

    def due(self) -> bool:
        step, config = self.run.step, self.run.config
        return (
            len(self.pending) >= self.every
            or time.time() - self.read_at >= READBACK_SECONDS
            or step >= config.max_train_steps
            or any(n and step % n == 0 for n in (config.save_every_n_steps, config.sample_every_n_steps))
        )

    def read(self) -> tuple[str, str] | None:
        """Read the pending steps back; (state, message) when the run ends at one of them."""
        run, config = self.run, self.run.config
        values = torch.stack([p.check for p in self.pending]).tolist() if self.pending else []  # the one sync
        pending, self.pending, self.read_at = self.pending, [], time.time()
        for p, (loss, finite) in zip(pending, values):
            if not math.isfinite(loss) or not finite:
                self._end_at(p.step - 1, self.good)
                if not math.isfinite(loss):
                    return "failed", (
                        f"The loss became {loss} at step {p.step}, so training stopped and kept the last "
                        f"finite vectors (step {run.step}). Try a lower learning_rate, or mixed_precision 'no'."
                    )
                return "failed", (
                    f"The vectors became non-finite at step {p.step}; the last finite ones "
                    f"(step {run.step}) were kept. Try a lower learning_rate."
                )
            self.good = p.vectors
            run.losses.append((p.step, loss))
            _log_step(run, p.step, loss, p.lr)
            elapsed = time.time() - self.started
            eta = elapsed / (p.step - self.start_step) * (config.max_train_steps - p.step)
            run.services.progress(StepRecord(p.step, config.max_train_steps, loss, p.lr, elapsed, eta, p.prompt))
            if p.step == run.step:
                _periodic(run)
            reason = self.early.update(p.step, loss) if self.early else None
            if reason:
                self._end_at(p.step, p.vectors)
                return "done", reason
        return None

    def _end_at(self, step: int, vectors: dict[str, torch.Tensor]) -> None:
        _restore(self.run, vectors)
        self.run.step = step
        optimizer = self.run.optimizer
        if any(
            torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all()
            for state in optimizer.state.values()
            for t in state.values()
        ):
            optimizer.state.clear()  # stepped with a non-finite gradient: a resumed run starts it afresh


def _accumulate(run: _Run, sampler: BatchSampler, alphas: torch.Tensor, scaler) -> tuple[torch.Tensor, str]:
    """Forward and backward over gradient_accumulation_steps batches; the mean loss (on the device) and one prompt."""
    config, adapter = run.config, run.adapter
    total, prompt = 0.0, ""
    for _ in range(config.gradient_accumulation_steps):
        latents, prompts = sampler.next_batch(run.step)
        latents = latents.to(adapter.device)
        noise = torch.randn_like(latents)
        if config.noise_offset:
            noise += config.noise_offset * torch.randn(latents.shape[0], latents.shape[1], 1, 1, device=latents.device)
        t = torch.randint(0, alphas.shape[0], (latents.shape[0],), device=latents.device)
        with adapter.autocast(config.mixed_precision):
            loss = diffusion_loss(adapter, alphas, latents, prompts, noise, t) / config.gradient_accumulation_steps
        (scaler.scale(loss) if scaler else loss).backward()
        total = total + loss.detach()
        prompt = prompts[0]
    return total, prompt


def diffusion_loss(
    adapter: ModelAdapter,
    alphas: torch.Tensor,
    latents: torch.Tensor,
    prompts: list[str],
    noise: torch.Tensor,
    t: torch.Tensor,
) -> torch.Tensor:
    """The model's own training objective: MSE to the noise (eps models) or to v (v-prediction models)."""
    a = alphas[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
    target = noise if adapter.prediction_type == "eps" else a.sqrt() * noise - (1 - a).sqrt() * latents
    cond = adapter.encode_text(prompts, (latents.shape[2] * 8, latents.shape[3] * 8))
    pred = adapter.predict(noisy, t, cond)
    return F.mse_loss(pred.float(), target.float())


def _optimizer_step(run: _Run, scaler) -> None:
    if scaler:
        scaler.step(run.optimizer)
        scaler.update()
    else:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)


def _restore(run: _Run, good: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for key, value in run.vectors.items():
            value.copy_(good[key])


def _log_step(run: _Run, step: int, loss: float, lr: float) -> None:
    """One CSV line per step next to the checkpoints: step, loss, lr."""
    path = run.paths.log_file
    new = not os.path.exists(path)
    with open(path, "a", encoding="utf-8") as f:
        if new:
            f.write("step,loss,lr,time\n")
        f.write(f"{step},{loss:.7f},{lr:.8g},{time.time():.1f}\n")


def _periodic(run: _Run) -> None:
    config = run.config
    if config.save_every_n_steps and run.step % config.save_every_n_steps == 0 and run.step < config.max_train_steps:
        _save(run, run.paths.checkpoint(run.step), checkpoint=True)
    if config.sample_every_n_steps and run.step % config.sample_every_n_steps == 0:
        _samples(run)


def _metadata(run: _Run) -> dict[str, str]:
    adapter = run.adapter
    return {
        "ti_trainer_version": __version__,
        "ti_token": run.config.token_string,
        "ti_step": str(run.step),
        "ti_vectors": str(next(iter(run.vectors.values())).shape[0]),
        "ti_model_family": adapter.family,
        "ti_base_model_name": adapter.model_name,
        "ti_base_model_hash": adapter.model_hash,
        "ti_run_dir": run.paths.run_dir,
        "ti_settings": json.dumps(run.config.to_dict()),
    }


def _save(run: _Run, path: str, checkpoint: bool) -> str:
    """Write the vectors (and, beside a checkpoint, the optimizer state); each file lands whole or not at all."""
    vectors = {k: v.detach() for k, v in run.vectors.items()}
    save_embedding(path, vectors, run.config.token_string, run.step, _metadata(run))
    save_optimizer_state(run.paths.optimizer_file(run.step), run.optimizer.state_dict(), vectors)
    if checkpoint:  # like the WebUI's own trainer: a crash leaves the embedding at its last checkpoint
        save_embedding(run.paths.final, vectors, run.config.token_string, run.step, _metadata(run))
        record_state(run.record, "running", run.step, "", path)
    else:  # the final file also stays among the checkpoints, for the test grid
        save_embedding(run.paths.checkpoint(run.step), vectors, run.config.token_string, run.step, _metadata(run))
        run.files.append(run.paths.checkpoint(run.step))
    run.files.append(path)
    return path


def _samples(run: _Run) -> None:
    config = run.config
    prompts = [p.replace("[name]", config.token_string) for p in config.sample_prompts] or [config.token_string]
    resolution = config.resolution or run.adapter.native_resolution
    with torch.no_grad():
        images = run.adapter.sample(prompts, config.sample_seed, config.sample_steps, (resolution, resolution))
    paths = []
    make_folder(run.paths.samples_dir)
    for i, image in enumerate(images):
        path = os.path.join(run.paths.samples_dir, f"{run.paths.name}-{run.step:06d}-{i}.png")
        image.save(path)
        paths.append(path)
    run.files.extend(paths)
    run.services.samples(run.step, images, paths)
