"""Reading each step's loss back to the host in batches, so a GPU step needs no host sync.

Each step is still checked (finite loss and vectors), reported and logged in order, as if read at once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from lib_ti.training.early_stop import EarlyStop


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


# On CUDA the host reads the losses back (one sync, which stalls the GPU's queue) every this many steps, or sooner
# when READBACK_SECONDS have passed or a checkpoint, preview or the last step is due; elsewhere every step.
READBACK_EVERY = {"cuda": 16}
READBACK_SECONDS = 2.0


@dataclass
class _Pending:
    step: int
    check: torch.Tensor  # [loss, vectors all finite], still on the device
    lr: float
    batches: list[tuple[list[str], tuple[int, int]]]  # each batch's prompts and image size
    vectors: dict[str, torch.Tensor]  # a copy of the vectors after this step

    @property
    def prompt(self) -> str:
        return self.batches[-1][0][0] if self.batches and self.batches[-1][0] else ""


class StepReader:
    """Steps done on the device, read back in batches; then each is checked, logged and reported in order.

    A non-finite loss or vector found in a batch puts the vectors back to the step before it; an early stop puts
    them back to the step it names. Either way the run ends at that step, as if each step had been read at once.
    """

    def __init__(self, run: Any, report: Callable[[Any, StepRecord], None]):
        config = run.config
        self.run, self.report = run, report
        self.every = READBACK_EVERY.get(run.adapter.device.type, 1)
        self.pending: list[_Pending] = []
        self.good = {k: v.detach().clone() for k, v in run.vectors.items()}  # after the last step read back
        self.start_step, self.started = run.step, time.time()
        self.read_at = self.started
        self.early = (
            EarlyStop(config.early_stopping_patience, config.early_stopping_min_delta)
            if config.early_stopping_patience
            else None
        )

    def add(self, loss: torch.Tensor, lr: float, batches: list[tuple[list[str], tuple[int, int]]]) -> None:
        vectors = {k: v.detach().clone() for k, v in self.run.vectors.items()}
        finite = torch.stack([torch.isfinite(v).all() for v in vectors.values()]).all()
        check = torch.stack([loss.detach().float().reshape(()), finite.float()])
        self.pending.append(_Pending(self.run.step, check, lr, batches, vectors))

    def due(self) -> bool:
        step, config = self.run.step, self.run.config
        return (
            len(self.pending) >= self.every
            or time.time() - self.read_at >= READBACK_SECONDS
            or step >= config.max_train_steps
            or any(n and step % n == 0 for n in (config.save_every_n_steps, config.sample_every_n_steps))
            or bool(
                (config.save_every_n_epochs or config.sample_every_n_epochs)
                and self.run.steps_per_epoch
                and step % self.run.steps_per_epoch == 0
            )
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
                    prompts = non_finite_conditioning(run.adapter, config.mixed_precision, p.batches)
                    if prompts:
                        return "failed", _conditioning_message(loss, p.step, run.step, prompts)
                    return "failed", (
                        f"The loss became {loss} at step {p.step}, so training stopped and kept the last "
                        f"finite vectors (step {run.step}). Try a lower learning_rate, or mixed_precision 'no'."
                    )
                return "failed", (
                    f"The vectors became non-finite at step {p.step}; the last finite ones "
                    f"(step {run.step}) were kept. Try a lower learning_rate."
                )
            self.good = p.vectors
            elapsed = time.time() - self.started
            eta = elapsed / (p.step - self.start_step) * (config.max_train_steps - p.step)
            self.report(run, StepRecord(p.step, config.max_train_steps, loss, p.lr, elapsed, eta, p.prompt))
            reason = self.early.update(p.step, loss) if self.early else None
            if reason:
                self._end_at(p.step, p.vectors)
                return "done", reason
        return None

    def _end_at(self, step: int, vectors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for key, value in self.run.vectors.items():
                value.copy_(vectors[key])
        self.run.step = step
        optimizer = self.run.optimizer
        if any(
            torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all()
            for state in optimizer.state.values()
            for t in state.values()
        ):
            optimizer.state.clear()  # stepped with a non-finite gradient: a resumed run starts it afresh


def non_finite_conditioning(adapter: Any, mixed_precision: str, batches: list[tuple[list[str], tuple[int, int]]]):
    """The prompts of the first batch whose text-encoder output is not finite with the vectors in use now (the
    failing step's), encoded as that step encoded them; [] when every output is finite. Run only after a
    non-finite loss, so training pays nothing for it."""
    with torch.no_grad(), adapter.autocast(mixed_precision):
        for prompts, size in batches:
            cond = adapter.encode_text(prompts, size)
            tensors = cond.values() if isinstance(cond, dict) else cond if isinstance(cond, (list, tuple)) else [cond]
            if not all(torch.isfinite(t).all() for t in tensors if torch.is_tensor(t)):
                return prompts
    return []


def _conditioning_message(loss: float, step: int, kept: int, prompts: list[str]) -> str:
    named = repr(prompts[0]) if len(prompts) == 1 else "the batch " + ", ".join(repr(p) for p in prompts)
    return (
        f"The loss became {loss} at step {step}: the text encoder's output for {named} was not finite, while the "
        f"vectors were, so training stopped and kept the last finite vectors (step {kept}). A lower learning_rate "
        "does not help with this, and the same prompt fails in txt2img too. With the WebUI's 'Original' emphasis "
        "mode, a text encoder whose output averages to exactly 0 (one with random, untrained weights) does this; "
        "the emphasis mode 'No norm', other captions or another model avoid it."
    )
