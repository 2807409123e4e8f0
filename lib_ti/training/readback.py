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
    prompt: str
    vectors: dict[str, torch.Tensor]  # a copy of the vectors after this step


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
