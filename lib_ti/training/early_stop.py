"""Opt-in early stopping: stop when the smoothed loss has not improved for a while, and say when and why."""

from __future__ import annotations


class EarlyStop:
    """Tracks a bias-corrected exponential moving average of the loss and its best value so far.

    Diffusion losses are noisy step to step (each step draws new noise and timesteps), so only the smoothed
    curve is compared, and only after ``patience`` steps of no improvement larger than ``min_delta`` (relative).
    """

    def __init__(self, patience: int, min_delta: float = 0.001, beta: float = 0.98):
        self.patience, self.min_delta, self.beta = patience, min_delta, beta
        self.average, self.count = 0.0, 0
        self.best, self.best_step = float("inf"), 0

    @property
    def smoothed(self) -> float:
        return self.average / (1 - self.beta**self.count) if self.count else float("nan")

    def update(self, step: int, loss: float) -> str | None:
        """Feed one step's loss; returns the reason to stop, or None to go on."""
        self.count += 1
        self.average = self.beta * self.average + (1 - self.beta) * loss
        value = self.smoothed
        if self.count < min(self.patience, 1 / (1 - self.beta)):
            return None  # the average has not settled yet
        if value < self.best * (1 - self.min_delta):
            self.best, self.best_step = value, step
            return None
        if step - self.best_step >= self.patience:
            return (
                f"Early stop at step {step}: the smoothed loss ({value:.4f}) has not improved by more than "
                f"{self.min_delta:.1%} for {self.patience} steps; its best was {self.best:.4f} at step "
                f"{self.best_step}."
            )
        return None
