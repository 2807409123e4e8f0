"""Learning-rate schedules: the WebUI's piecewise syntax, kohya's named schedulers, and warmup."""

from __future__ import annotations

import math


def parse_lr_schedule(text: str | float, max_steps: int) -> list[tuple[float, int]]:
    """Parse "0.005:100, 1e-3:1000, 1e-5" into (rate, until_step) pieces, as the WebUI's trainer does.

    A bare number is one piece to the end. A piece without a step, or with step -1, runs to the end.
    """
    pieces: list[tuple[float, int]] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        rate_text, _, step_text = part.partition(":")
        try:
            rate = float(rate_text)
            until = int(step_text) if step_text.strip() else max_steps
        except ValueError:
            raise ValueError(f"{str(text)!r} is not a number or a schedule like '0.005:100, 1e-3:1000'") from None
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"rates must be positive numbers, got {rate_text.strip()!r}")
        if until == -1:
            until = max_steps
        if until <= 0:
            raise ValueError(f"steps in a schedule must be positive, got {step_text.strip()!r}")
        if pieces and until <= pieces[-1][1]:
            raise ValueError(f"steps in a schedule must increase, got {until} after {pieces[-1][1]}")
        pieces.append((rate, until))
        if until >= max_steps:
            break
    if not pieces:
        raise ValueError("it is empty; give a number such as 0.005")
    return pieces


class LRSchedule:
    """The rate at each step: piecewise base rate x named scheduler factor x linear warmup."""

    def __init__(
        self,
        learning_rate: str | float,
        max_steps: int,
        scheduler: str = "constant",
        warmup_steps: int = 0,
        num_cycles: int = 1,
        power: float = 1.0,
    ):
        self.pieces = parse_lr_schedule(learning_rate, max_steps)
        self.max_steps = max_steps
        self.scheduler = scheduler
        self.warmup_steps = warmup_steps
        self.num_cycles = max(1, num_cycles)
        self.power = power

    def base_rate(self, step: int) -> float:
        for rate, until in self.pieces:
            if step < until:
                return rate
        return self.pieces[-1][0]

    def factor(self, step: int) -> float:
        """The named scheduler's multiplier at ``step`` (0-based), after warmup."""
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.scheduler in ("constant", "constant_with_warmup"):
            return 1.0
        span = max(1, self.max_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        if self.scheduler == "linear":
            return max(0.0, 1.0 - progress)
        if self.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.scheduler == "cosine_with_restarts":
            if progress >= 1.0:
                return 0.0
            return 0.5 * (1.0 + math.cos(math.pi * ((self.num_cycles * progress) % 1.0)))
        if self.scheduler == "polynomial":
            return (1.0 - progress) ** self.power
        raise ValueError(f"unknown lr_scheduler {self.scheduler!r}")

    def rate(self, step: int) -> float:
        return self.base_rate(step) * self.factor(step)
