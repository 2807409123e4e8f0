"""The test grid: strengths × prompts × checkpoints, laid out on X, Y and Z, one seed for every cell.

Pure logic (parsing, prompt building, layout); ``lib_ti.hosts`` render the cells through txt2img.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field

from lib_ti.errors import UserError
from lib_ti.grid.aliases import alias

PLACEHOLDER = "[name]"
MODES = ("emphasis", "vectors")
AXES = ("strength", "prompt", "checkpoint")
DEFAULT_STRENGTHS = "0.6, 0.8, 1.0, 1.2, 1.4"
DEFAULT_PROMPTS = ["[name]", "[name] portrait", "[name] landscape", "beautiful [name] artwork"]
MAX_STRENGTH = 3.0
MODE_LABELS = {
    "emphasis": "Emphasis (name:w): scales the text encoder's output",
    "vectors": "Vectors × w: scales the embedding before the text encoder",
}


@dataclass(frozen=True)
class Checkpoint:
    label: str  # "final" or the step
    path: str | None  # None: the embedding as the WebUI loaded it


@dataclass(frozen=True)
class Cell:
    x: int
    y: int
    z: int
    strength: float | None  # None: the baseline, without the embedding
    template: str
    checkpoint: Checkpoint
    prompt: str


@dataclass
class GridPlan:
    cells: list[Cell]
    axes: dict[str, str]  # "x" | "y" | "z" -> "strength" | "prompt" | "checkpoint"
    labels: dict[str, list[str]]  # "x" | "y" | "z" -> labels in order
    notes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.labels["x"]), len(self.labels["y"]), len(self.labels["z"])


def parse_strengths(text: str | list) -> list[float]:
    """'0.6, 0.8, 1.0' -> [0.6, 0.8, 1.0]; every value checked, with a message naming the bad ones."""
    items = text if isinstance(text, (list, tuple)) else [s for s in re.split(r"[,\s]+", str(text)) if s]
    values, bad = [], []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            bad.append(f"{item!r} is not a number")
            continue
        if not math.isfinite(value) or value < 0:
            bad.append(f"{item!r} must be 0 or more")
        elif value > MAX_STRENGTH:
            bad.append(f"{item!r} is above {MAX_STRENGTH:g}, where any embedding turns to noise")
        else:
            values.append(value)
    if bad:
        raise UserError("Strengths: " + "; ".join(bad) + ". Write them like 0.6, 0.8, 1.0")
    if not values:
        raise UserError("Strengths: give at least one, e.g. 0.6, 0.8, 1.0")
    return values


def format_strength(value: float | None) -> str:
    return "without" if value is None else f"{value:g}"


def name_pattern(name: str, aliases: bool = False) -> str:
    """A regex for the embedding's name as the WebUI matches it: a whole word, any case, optionally with the
    emphasis around it (``(name)``, ``(name:1.1)``); with ``aliases``, also its checkpoint/scale words."""
    word = re.escape(name) + (r"(?:-\d+)?(?:-x\d+(?:\.\d+)?)?" if aliases else "")
    return rf"\(\s*{word}\s*(?::\s*[\d.]+\s*)?\)|(?<![\w.\-]){word}(?![\w.\-])"


def remove_name(text: str) -> str:
    """The prompt with [name] taken out and no gaps left: no double spaces, empty emphasis or dangling commas."""
    text = text.replace(PLACEHOLDER, "")
    text = re.sub(r"\(\s*(?::\s*[\d.]+)?\s*\)", "", text)
    text = re.sub(r"\s+([,)])", r"\1", text)
    text = re.sub(r"\(\s*,\s*", "(", re.sub(r",\s*\)", ")", text))
    text = re.sub(r",\s*(?:,\s*)+", ", ", text)
    text = re.sub(r"^[\s,]+|[\s,]+$", "", text)
    return re.sub(r"\s{2,}", " ", text)


def build_prompt(template: str, name: str, strength: float | None, mode: str, step: str | None = None) -> str:
    """The prompt a cell sends to txt2img. Any other WebUI syntax in the template is left as it is.

    A checkpoint is named ``<name>-<step>``; in vector mode the scale is part of the name too (``<name>-x1.2``):
    the prompt alone then says which vectors the cell used, and txt2img reproduces it from the infotext.
    """
    if strength is None:
        return remove_name(template)
    if mode == "emphasis":
        return template.replace(PLACEHOLDER, f"({alias(name, step)}:{strength:g})")
    return template.replace(PLACEHOLDER, alias(name, step, strength))


def place_name(line: str, name: str) -> str:
    """The embedding's own name in a prompt marks its place like [name] (weights written around it included)."""
    line = re.sub(r"\(\s*\[name\]\s*(?::\s*[\d.]+\s*)?\)", PLACEHOLDER, line)
    return re.sub(name_pattern(name), PLACEHOLDER, line, flags=re.IGNORECASE) if name else line


def check_prompts(prompts: list[str], name: str = "") -> tuple[list[str], list[str]]:
    """Prompts to use and notes. The embedding's name counts as [name]; a prompt with neither gets the embedding
    put in front, and says so."""
    lines = [place_name(p.strip(), name) for p in prompts if p.strip()]
    if not lines:
        raise UserError("Test prompts: give at least one, with [name] where the embedding goes, e.g. '[name] portrait'")
    notes, out = [], []
    for line in lines:
        if PLACEHOLDER not in line:
            notes.append(
                f"The prompt {line!r} names neither [name] nor {name or 'the embedding'}; the embedding was put in "
                f"front: '[name], {line}'."
            )
            line = f"[name], {line}"
        out.append(line)
    return out, notes


def plan_grid(
    name: str,
    strengths: list[float],
    prompts: list[str],
    checkpoints: list[Checkpoint],
    mode: str,
    baseline: bool,
    x: str,
    y: str,
    z: str,
    max_images: int,
) -> GridPlan:
    """Every cell with its X, Y, Z position; refuses a grid larger than max_images with the count."""
    if mode not in MODES:
        raise UserError(f"Strength mode must be one of {', '.join(MODES)}; got {mode!r}")
    axes = {"x": x, "y": y, "z": z}
    if sorted(axes.values()) != sorted(AXES):
        raise UserError(
            "Layout: put each of strength, prompt and checkpoint on exactly one of X, Y and Z "
            f"(got X={x}, Y={y}, Z={z})."
        )
    prompts, notes = check_prompts(prompts, name)
    values = {
        "strength": ([None] if baseline else []) + list(strengths),
        "prompt": prompts,
        "checkpoint": checkpoints or [Checkpoint("final", None)],
    }
    count = len(values["strength"]) * len(values["prompt"]) * len(values["checkpoint"])
    if count > max_images:
        raise UserError(
            f"This grid would take {count} images ({len(values['strength'])} strengths × "
            f"{len(values['prompt'])} prompts × {len(values['checkpoint'])} checkpoints), more than the "
            f"limit of {max_images}. Use fewer values, or raise the limit (max_images) to go ahead."
        )
    labels = {axis: [_label(kind, v, name) for v in values[kind]] for axis, kind in axes.items()}
    cells = []
    for zi, yi, xi in itertools.product(*(range(len(values[axes[a]])) for a in ("z", "y", "x"))):
        pick = {axes["x"]: xi, axes["y"]: yi, axes["z"]: zi}
        strength = values["strength"][pick["strength"]]
        template = values["prompt"][pick["prompt"]]
        checkpoint = values["checkpoint"][pick["checkpoint"]]
        cells.append(
            Cell(
                xi,
                yi,
                zi,
                strength,
                template,
                checkpoint,
                build_prompt(template, name, strength, mode, checkpoint.label),
            )
        )
    return GridPlan(cells, axes, labels, notes)


def _label(kind: str, value, name: str) -> str:
    if kind == "strength":
        return format_strength(value)
    if kind == "checkpoint":
        return value.label if value.label == "final" else f"step {value.label}"
    return value.replace(PLACEHOLDER, name)


def pick_checkpoints(
    available: list[tuple[int, str]], wanted: str, final_step: int | None = None, max_default: int = 6
) -> list[Checkpoint]:
    """'all', '' (every k-th when there are many), 'none', or steps like '100, 300'; the loaded embedding last.

    The checkpoint at the embedding's own step is the embedding itself, so 'all' and '' leave it out.
    """
    wanted = (wanted or "").strip().lower()
    by_step = dict(available)
    if wanted in ("", "auto", "all"):
        available = [(s, p) for s, p in available if s != final_step]
    if wanted in ("", "auto"):
        every = max(1, math.ceil(len(available) / max_default))
        chosen = [s for i, (s, _) in enumerate(reversed(available)) if i % every == 0][::-1]
    elif wanted == "all":
        chosen = [s for s, _ in available]
    elif wanted == "none":
        chosen = []
    else:
        try:
            chosen = [int(s) for s in re.split(r"[,\s]+", wanted) if s]
        except ValueError:
            raise UserError(f"Checkpoints: write steps like '100, 300', or 'all'; got {wanted!r}") from None
        missing = [s for s in chosen if s not in by_step]
        if missing:
            have = ", ".join(str(s) for s, _ in available) or "none"
            raise UserError(f"Checkpoints missing on disk for step(s) {', '.join(map(str, missing))} (saved: {have}).")
    return [Checkpoint(str(s), by_step[s]) for s in chosen] + [Checkpoint("final", None)]


def _word(name: str) -> str:
    return rf"(?<![\w.\-]){re.escape(name)}(?![\w.\-])"


def names_in_prompt(prompt: str, names: list[str]) -> list[str]:
    """Which of these embedding names the prompt uses (as whole words, the way the WebUI matches them)."""
    return [n for n in names if re.search(_word(n), prompt)]


def reweight(prompt: str, name: str, strength: float) -> str:
    """Give every use of ``name`` the emphasis weight ``strength``, replacing a weight already written."""
    weighted = re.sub(rf"\(\s*{re.escape(name)}\s*:\s*[\d.]+\s*\)", f"({name}:{strength:g})", prompt)
    if weighted != prompt:
        return weighted
    return re.sub(_word(name), f"({name}:{strength:g})", prompt)


def rename(prompt: str, name: str, alias: str) -> str:
    return re.sub(_word(name), alias, prompt)
