"""Errors a user can act on: each carries a message fit for the UI and the API's 422."""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user asked for; the message says what and how to fix it."""


class ConfigError(UserError):
    """One or more settings are invalid; ``problems`` lists them as ``key: why`` lines."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("Invalid settings:\n" + "\n".join(f"- {p}" for p in self.problems))


class TrainingStopped(Exception):
    """Training ended early for a reason the user should read (NaN loss, interrupt)."""
