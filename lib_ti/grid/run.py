"""Render a test grid: plan the cells, give each its vectors, draw the labelled grid(s), save, report.

The WebUI side (txt2img, its embedding database, its output folders) comes in through a ``GridBackend``.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from PIL import Image

from lib_ti.training.dataset import list_images, open_image
from lib_ti.errors import UserError
from lib_ti.grid.plan import (
    DEFAULT_PROMPTS,
    DEFAULT_STRENGTHS,
    MODES,
    Cell,
    GridPlan,
    format_strength,
    parse_strengths,
    pick_checkpoints,
    plan_grid,
)
from lib_ti.grid.image import GridGeometry, draw_grid
from lib_ti.training.paths import list_checkpoints
from lib_ti.grid.quality import advice, score_cells


@dataclass
class LoadedEmbedding:
    name: str
    vectors: dict[str, torch.Tensor]
    path: str
    shorthash: str
    step: int | None
    run_dir: str
    train_data_dir: str = ""


class GridBackend(Protocol):
    def embedding(self, name: str) -> LoadedEmbedding: ...
    def render(self, prompt: str, gen: dict[str, Any], extra: dict[str, str]) -> tuple[Image.Image, str, str]: ...
    def save_grid(self, image: Image.Image, seed: int, title: str, info: str) -> str: ...
    def progress(self, done: int, total: int, text: str) -> None: ...
    def should_stop(self) -> bool: ...
    def font_path(self) -> str | None: ...
    def clip_scorer(self) -> tuple[Any, str]: ...


@dataclass
class GridRequest:
    embedding: str = ""
    strengths: Any = DEFAULT_STRENGTHS
    mode: str = "emphasis"
    baseline: bool = True
    prompts: Any = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    checkpoints: str = "none"
    x: str = "strength"
    y: str = "prompt"
    z: str = "checkpoint"
    negative_prompt: str = ""
    sampler_name: str = ""
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    seed: int = -1
    max_images: int = 100
    save: bool = True
    scores: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any], defaults: dict[str, Any] | None = None) -> "GridRequest":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"Unknown grid settings: {', '.join(unknown)}. Known: {', '.join(sorted(known))}.")
        values = {**{k: v for k, v in (defaults or {}).items() if k in known}, **data}
        request = cls(**values)
        if isinstance(request.prompts, str):
            request.prompts = request.prompts.splitlines()
        for key in ("steps", "width", "height", "max_images"):
            if not isinstance(getattr(request, key), (int, float)) or getattr(request, key) <= 0:
                raise UserError(f"{key}: must be a positive number, got {getattr(request, key)!r}")
        if not request.embedding:
            raise UserError("Choose the embedding to test.")
        if request.mode not in MODES:
            raise UserError(f"mode: one of {', '.join(MODES)}; got {request.mode!r}")
        return request


@dataclass
class GridResult:
    images: list[Image.Image]
    paths: list[str]
    cells: list[dict[str, Any]]
    geometry: GridGeometry | None
    seed: int
    notes: list[str]
    interrupted: bool = False


def file_shorthash(path: str) -> str:
    """The WebUI's TI hash: the first 12 hex digits of the file's sha256."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def plan_for(request: GridRequest, loaded: LoadedEmbedding) -> GridPlan:
    strengths = parse_strengths(request.strengths)
    available = list_checkpoints(loaded.run_dir, loaded.name) if loaded.run_dir else []
    checkpoints = pick_checkpoints(available, request.checkpoints, loaded.step)
    return plan_grid(
        loaded.name,
        strengths,
        list(request.prompts),
        checkpoints,
        request.mode,
        request.baseline,
        request.x,
        request.y,
        request.z,
        int(request.max_images),
    )


def run_grid(request: GridRequest, backend: GridBackend) -> GridResult:
    """Every cell in order with the same seed; Interrupt stops after the current image and keeps what is done."""
    loaded = backend.embedding(request.embedding)
    plan = plan_for(request, loaded)
    seed = request.seed if request.seed >= 0 else random.randrange(2**32)
    gen = {
        "negative_prompt": request.negative_prompt,
        "steps": int(request.steps),
        "cfg_scale": request.cfg_scale,
        "width": int(request.width),
        "height": int(request.height),
        "seed": seed,
    }
    if request.sampler_name:
        gen["sampler_name"] = request.sampler_name
    baselines: dict[str, tuple[Image.Image, str, str]] = {}  # without the embedding, one image per prompt
    rendered: dict[Cell, tuple[Image.Image, str, str]] = {}
    interrupted = False
    for done, cell in enumerate(plan.cells):
        if backend.should_stop():
            interrupted = True
            break
        backend.progress(done, len(plan.cells), f"Cell {done + 1}/{len(plan.cells)}: {cell.prompt}")
        if cell.strength is None:  # the checkpoint does not matter there
            if cell.prompt not in baselines:
                baselines[cell.prompt] = backend.render(cell.prompt, gen, {})
            rendered[cell] = baselines[cell.prompt]
        else:
            rendered[cell] = _render_cell(cell, request, loaded, backend, gen)
    backend.progress(len(rendered), len(plan.cells), "Drawing the grid")
    result = _assemble(plan, rendered, request, backend, seed, interrupted)
    if request.scores and result.cells:
        _add_scores(result, [rendered[c][0] for c in plan.cells if c in rendered], loaded, backend)
    return result


def _add_scores(result: GridResult, images: list[Image.Image], loaded: LoadedEmbedding, backend: GridBackend) -> None:
    """CLIP scores and advice; without a CLIP model (offline, say) the grid stands alone and says why."""
    scorer, why = backend.clip_scorer()
    if scorer is None:
        result.notes.append(f"No quality scores: {why}")
        return
    try:
        training = [open_image(p) for p in list_images(loaded.train_data_dir)] if loaded.train_data_dir else []
    except UserError:
        training = []
    if not training:
        result.notes.append(
            "No quality scores: the training images of this embedding were not found "
            f"({loaded.train_data_dir or 'no folder recorded in the file'})."
        )
        return
    score_cells(result.cells, images, training, scorer, loaded.name)
    result.notes.extend(advice([], result.cells))


def _render_cell(
    cell: Cell, request: GridRequest, loaded: LoadedEmbedding, backend: GridBackend, gen: dict
) -> tuple[Image.Image, str, str]:
    """A cell with the embedding. Its prompt names the checkpoint and, in vector mode, the scale
    (``name-300-x1.2``): txt2img resolves that word, so the cell's infotext reproduces the cell."""
    path = cell.checkpoint.path
    if path is not None and not os.path.isfile(path):
        raise UserError(f"Checkpoint {path!r} is missing on disk.")
    extra = {} if path is None else {"TI checkpoint": f"{loaded.name} step {cell.checkpoint.label}"}
    if request.mode == "vectors":
        extra["TI strength"] = f"{loaded.name} vectors x{cell.strength:g}"
    return backend.render(cell.prompt, gen, extra)


def _assemble(
    plan: GridPlan, rendered: dict, request: GridRequest, backend: GridBackend, seed: int, interrupted: bool
) -> GridResult:
    columns, rows, layers = plan.shape
    images, paths, geometry = [], [], None
    for z in range(layers):
        matrix = [[rendered.get(c, (None,))[0] for c in plan.cells if c.z == z and c.y == y] for y in range(rows)]
        if not any(im is not None for row in matrix for im in row):
            continue
        title = f"{request.embedding}: {plan.axes['z']} {plan.labels['z'][z]}" if layers > 1 else request.embedding
        grid, geometry = draw_grid(matrix, plan.labels["x"], plan.labels["y"], title, backend.font_path())
        images.append(grid)
        if request.save:
            info = (
                f"TI Trainer grid: {request.embedding}, X={plan.axes['x']}, Y={plan.axes['y']}, "
                f"Z={plan.axes['z']}, mode={request.mode}, seed={seed}"
            )
            paths.append(backend.save_grid(grid, seed, title, info))
    cells = [
        {
            "x": c.x,
            "y": c.y,
            "z": c.z,
            "strength": format_strength(c.strength),
            "prompt": c.prompt,
            "checkpoint": c.checkpoint.label,
            "infotext": rendered[c][1],
            "path": rendered[c][2],
        }
        for c in plan.cells
        if c in rendered
    ]
    notes = list(plan.notes) + (["Interrupted: the grid shows the cells done so far."] if interrupted else [])
    return GridResult(images, paths, cells, geometry, seed, notes, interrupted)
