"""The training run, top to bottom: check, read the data, start the vectors, train, save.

Everything the WebUI provides comes in through a ``ModelAdapter`` and ``Services``; nothing here imports it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from PIL import Image

from lib_ti.training.kohya import apply_length, resolve_length
from lib_ti.training.latents import BatchSampler, LatentCache
from lib_ti.training.layout import bucket_multiple, dataset_specs, load_planned, plan_dataset
from lib_ti.training.loss import diffusion_loss
from lib_ti.training.noise import input_noise, make_noise, sample_timesteps
from lib_ti.training.captions import make_plan
from lib_ti.training.config import TrainConfig
from lib_ti.training.config_files import config_to_json
from lib_ti.training.earlier_runs import keep_runs_apart
from lib_ti.errors import UserError
from lib_ti.embeddings.files import (
    atomic_write_bytes,
    load_embedding,
    load_optimizer_state,
    make_folder,
)
from lib_ti.training.model import ModelAdapter, TrainOptions, init_vectors
from lib_ti.training.readback import StepReader, StepRecord
from lib_ti.training.optim import keep_own_settings, make_optimizer
from lib_ti.training.paths import RunPaths, plan_paths
from lib_ti.training.run_state import RunState, cut_log, record_state, training_here
from lib_ti.training.saving import log_step, save_vectors, save_when_due
from lib_ti.training.schedule import LRSchedule

log = logging.getLogger(__name__)


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
        self.steps_per_epoch = 0
        self.vectors: dict[str, torch.Tensor] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self.resumed_from = ""  # the run folder of the embedding this run continues
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
    config = run.config = dataclasses.replace(config, seed=seed)  # the saved config and metadata name the seed used
    torch.manual_seed(seed)
    rng = random.Random(seed)

    # plan the data as kohya would (repeats, dataset config, buckets), count the steps, encode the images once
    cache, batch_sizes = _read_data(run, seed)
    config = run.config  # now holds the counted max_train_steps

    # start the vectors: from an earlier embedding, or from the init word
    _start_vectors(run)
    if run.step >= config.max_train_steps:
        raise UserError(f"The embedding is already trained to step {run.step}; raise max_train_steps above it.")
    note = keep_runs_apart(paths, run.step, bool(config.weights) and _same_folder(run.resumed_from, paths.run_dir))
    if note:
        run.say(note)
    make_folder(paths.run_dir)
    atomic_write_bytes(paths.config_file, config_to_json(config).encode("utf-8"))
    if config.weights:
        cut_log(paths.log_file, run.step)
    run.record = RunState("running", paths.name, paths.run_dir, paths.final, run.step, config.max_train_steps)
    run.record.config, run.record.checkpoint = config.to_dict(), config.weights
    with training_here(run.record):
        record_state(run.record, "running", run.step)
        try:
            state, message, final = _train_vectors(run, cache, rng, batch_sizes)
        except BaseException as e:  # the state file must not say 'running' for a run that is over
            record_state(run.record, "failed", run.step, f"{type(e).__name__}: {e}")
            raise
        record_state(run.record, state, run.step, message, final)
    run.say(message)
    return TrainResult(state, run.step, final, run.files, run.losses, message, run.messages, paths.run_dir)


def _train_vectors(run: _Run, cache: LatentCache, rng: random.Random, batch_sizes: list[int]) -> tuple[str, str, str]:
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
    captions = make_plan(
        config.token_string,
        config.caption_source,
        config.template_set,
        config.templates,
        [(s.step, s.templates) for s in config.stages],
    )
    sampler = BatchSampler(cache, captions, config.train_batch_size, rng, batch_sizes)
    options = TrainOptions(config.gradient_checkpointing, config.mixed_precision, config.offload_vae)
    with adapter.training(config.token_string, leaves, options):
        state, message = _loop(run, sampler)
        final = save_vectors(run, run.paths.final, checkpoint=False)
    return state, message, final


def _read_data(run: _Run, seed: int) -> tuple[LatentCache, list[int]]:
    """The latents of every planned image and each dataset's batch size; the run learns its length here."""
    config, adapter = run.config, run.adapter
    resolution = config.resolution or adapter.native_resolution
    specs, notes = dataset_specs(config, resolution)
    plan = plan_dataset(specs, bucket_multiple(adapter.native_resolution))
    length = resolve_length(config, plan)
    config, length_notes = apply_length(config, length)
    run.config, run.steps_per_epoch = config, length.steps_per_epoch
    started = time.perf_counter()
    dataset = load_planned(plan)
    summary = (
        f"{len(dataset.items)} image(s), {plan.images_with_repeats} with repeats, at {resolution} px, seed {seed}, "
        f"{adapter.family} model {adapter.model_name}."
    )
    for note in notes + dataset.notes + length_notes + [summary, f"Length: {length.explanation}"]:
        run.say(note)
    read = time.perf_counter()
    cache = LatentCache.build(dataset, adapter, config.flip_aug, config.train_batch_size)
    count = sum(len(z) for z in cache.latents)
    run.say(  # the time before the first step: on a CPU the VAE's encoding is most of it
        f"Images read in {read - started:.1f} s; {count} latent(s) encoded once with the VAE in "
        f"{time.perf_counter() - read:.1f} s ({adapter.device.type})."
    )
    return cache, [spec.batch_size for spec in plan.specs]


def _same_folder(a: str, b: str) -> bool:
    return bool(a) and os.path.realpath(a) == os.path.realpath(b)


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
        run.resumed_from = meta.get("ti_run_dir") or os.path.dirname(os.path.abspath(config.weights))
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
    steps = StepReader(run, _report)
    while run.step < config.max_train_steps:
        if services.should_stop():
            end = steps.read()
            return end or ("interrupted", f"Interrupted at step {run.step}; the embedding was saved as it was.")
        lr = schedule.rate(run.step)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        loss, batches = _accumulate(run, sampler, alphas, scaler)
        _optimizer_step(run, scaler)
        run.step += 1
        steps.add(loss, lr, batches)
        if steps.due():
            end = steps.read()
            if end:
                return end
    took = time.time() - steps.started
    return "done", f"Trained {run.config.token_string!r} to step {run.step} in {took:.1f} s of steps."


def _accumulate(
    run: _Run, sampler: BatchSampler, alphas: torch.Tensor, scaler
) -> tuple[torch.Tensor, list[tuple[list[str], tuple[int, int]]]]:
    """Forward and backward over gradient_accumulation_steps batches; the mean loss (on the device) and each
    batch's prompts and image size, to find a non-finite text-encoder output again if the loss was not finite."""
    config, adapter = run.config, run.adapter
    total, batches = 0.0, []
    for _ in range(config.gradient_accumulation_steps):
        latents, prompts = sampler.next_batch(run.step)
        latents = latents.to(adapter.device)
        noise = make_noise(latents, config)
        t = sample_timesteps(latents.shape[0], config, alphas.shape[0], latents.device)
        with adapter.autocast(config.mixed_precision):
            loss = diffusion_loss(adapter, alphas, latents, prompts, noise, t, config, input_noise(noise, config))
            loss = loss / config.gradient_accumulation_steps
        (scaler.scale(loss) if scaler else loss).backward()
        total = total + loss.detach()
        batches.append((prompts, (latents.shape[2] * 8, latents.shape[3] * 8)))
        if sampler.epoch_ended:  # sd-scripts steps at the end of an epoch even with fewer batches accumulated
            break
    return total * config.gradient_accumulation_steps / len(batches), batches


def _optimizer_step(run: _Run, scaler) -> None:
    if scaler:
        scaler.step(run.optimizer)
        scaler.update()
    else:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)


def _report(run: _Run, record: StepRecord) -> None:
    """A step read back: logged, shown, and its checkpoint or preview made when due."""
    run.losses.append((record.step, record.loss))
    log_step(run, record.step, record.loss, record.lr)
    run.services.progress(record)
    if record.step == run.step:
        save_when_due(run)
