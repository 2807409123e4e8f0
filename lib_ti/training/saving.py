"""What a run leaves behind while it trains: the loss log, checkpoints with their optimizer state and metadata,
and previews — each written when its interval comes round, each file whole or not at all."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import TYPE_CHECKING

import torch

from lib_ti import __version__
from lib_ti.embeddings.files import make_folder, save_embedding, save_optimizer_state
from lib_ti.training.kohya import sample_requests
from lib_ti.training.model import sample_with_options
from lib_ti.training.previews import save_preview
from lib_ti.training.run_state import record_state

if TYPE_CHECKING:
    from lib_ti.training.trainer import _Run as Run

log = logging.getLogger(__name__)


def log_step(run: Run, step: int, loss: float, lr: float) -> None:
    """One CSV line per step next to the checkpoints: step, loss, lr."""
    path = run.paths.log_file
    new = not os.path.exists(path)
    with open(path, "a", encoding="utf-8") as f:
        if new:
            f.write("step,loss,lr,time\n")
        f.write(f"{step},{loss:.7f},{lr:.8g},{time.time():.1f}\n")


def save_when_due(run: Run) -> None:
    """Checkpoints and previews every N steps, or at the end of every N-th epoch (kohya's *_every_n_epochs)."""
    config, step = run.config, run.step
    epoch_end = bool(run.steps_per_epoch) and step % run.steps_per_epoch == 0
    epoch = step // run.steps_per_epoch if run.steps_per_epoch else 0

    def every(n_steps: int, n_epochs: int) -> bool:
        return bool(n_steps and step % n_steps == 0) or bool(n_epochs and epoch_end and epoch % n_epochs == 0)

    if every(config.save_every_n_steps, config.save_every_n_epochs) and step < config.max_train_steps:
        save_vectors(run, run.paths.checkpoint(step), checkpoint=True)
    if every(0 if config.sample_every_n_epochs else config.sample_every_n_steps, config.sample_every_n_epochs):
        _samples(run)  # sd-scripts: sample_every_n_epochs overrides sample_every_n_steps


def _metadata(run: Run) -> dict[str, str]:
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


def save_vectors(run: Run, path: str, checkpoint: bool) -> str:
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


def _samples(run: Run) -> None:
    """Previews with the WebUI's infotext, naming the vectors of this step as ``<name>-<step>``: those are kept as
    a checkpoint (saved now if the interval did not), so PNG Info → txt2img reproduces each preview."""
    config = run.config
    if run.step < config.max_train_steps and not os.path.exists(run.paths.checkpoint(run.step)):
        save_vectors(run, run.paths.checkpoint(run.step), checkpoint=True)  # the last step's comes with the final file
    lines = [p.replace("[name]", config.token_string) for p in config.sample_prompts] or [config.token_string]
    resolution = config.resolution or run.adapter.native_resolution
    prompts, options, notes = sample_requests(lines, config.sample_seed, config.sample_steps, resolution)
    devices = [run.adapter.device] if run.adapter.device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):  # txt2img seeds torch's generator: keep ours
            images, note = sample_with_options(run.adapter, prompts, config.sample_seed, config.sample_steps, options)
    except Exception as e:  # a preview is extra: the WebUI failing to generate one must not end the training
        log.warning("TI Trainer: the preview at step %d failed", run.step, exc_info=True)
        images, note = (
            [],
            (
                f"Previews could not be made ({type(e).__name__}: {e}); training goes on without them. txt2img "
                "in the WebUI shows the same problem (the console has the details)."
            ),
        )
    for text in notes + [note]:
        if text and text not in run.messages:  # said once per run, not at every preview
            run.say(text)
    paths = []
    make_folder(run.paths.samples_dir)
    for i, image in enumerate(images):
        path = os.path.join(run.paths.samples_dir, f"{run.paths.name}-{run.step:06d}-{i}.png")
        save_preview(image, path, config.token_string, run.paths.name, run.step)
        paths.append(path)
    run.files.extend(paths)
    run.services.samples(run.step, images, paths)
