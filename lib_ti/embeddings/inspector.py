"""What an embedding holds: family, vectors, norms against the model's own tokens, nearest words, warnings."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch

from lib_ti.embeddings.formats import EmbeddingFile
from lib_ti.training.paths import list_checkpoints

HIGH_NORM = 3.0  # × the model's average token norm: a common sign of overtraining


@dataclass
class Reference:
    """The loaded model's input embedding tables (one per text encoder) and a way to spell a token id."""

    family: str
    tables: dict[str, torch.Tensor]
    spell: Callable[[int], str]


def guess_family(vectors: dict[str, torch.Tensor]) -> str:
    if set(vectors) == {"clip_l", "clip_g"}:
        return "SDXL"
    width = vectors["clip_l"].shape[-1]
    return {768: "SD1", 1024: "SD2"}.get(width, f"unknown (width {width})")


def _nearest(vectors: torch.Tensor, table: torch.Tensor, spell: Callable[[int], str], k: int) -> list[list[str]]:
    a = torch.nn.functional.normalize(vectors.float(), dim=-1)
    b = torch.nn.functional.normalize(table.float(), dim=-1)
    scores, ids = (a @ b.T).topk(k, dim=-1)
    return [[f"{spell(int(i))} ({float(s):.2f})" for s, i in zip(row_s, row_i)] for row_s, row_i in zip(scores, ids)]


def inspect(file: EmbeddingFile, reference: Reference | None = None, top_k: int = 3) -> dict[str, Any]:
    """A report as plain data (the tab renders it, the API returns it)."""
    report: dict[str, Any] = {
        "path": file.path,
        "format": file.format,
        "name": file.name,
        "family": guess_family(file.vectors),
        "metadata": file.metadata,
        "encoders": {},
        "warnings": [],
    }
    counts = {k: v.shape[0] for k, v in file.vectors.items()}
    report["vectors"] = next(iter(counts.values()))
    if len(set(counts.values())) > 1:
        report["warnings"].append(f"The encoders hold different vector counts ({counts}); the WebUI uses clip_g's.")
    fits = (
        reference is not None
        and set(reference.tables) == set(file.vectors)
        and all(reference.tables[k].shape[-1] == v.shape[-1] for k, v in file.vectors.items())
    )
    if fits:
        report["family"] = reference.family  # the loaded model knows better than a guess from widths
    if reference is not None and not fits:
        report["warnings"].append(
            f"Made for {report['family']}, but the loaded model is {reference.family}: the WebUI will skip it."
        )
    for key, vectors in file.vectors.items():
        info: dict[str, Any] = {"width": vectors.shape[-1], "norms": [round(float(n), 4) for n in vectors.norm(dim=-1)]}
        if not torch.isfinite(vectors).all():
            report["warnings"].append(f"{key}: holds NaN or infinite values; the embedding is broken.")
        elif fits:
            typical = float(reference.tables[key].float().norm(dim=-1).mean())
            info["token_norm"] = round(typical, 4)
            info["norm_ratio"] = [round(n / typical, 2) for n in info["norms"]]
            info["nearest"] = _nearest(vectors, reference.tables[key], reference.spell, top_k)
            high = [i for i, r in enumerate(info["norm_ratio"]) if r > HIGH_NORM]
            if high:
                report["warnings"].append(
                    f"{key}: vector(s) {', '.join(map(str, high))} are over {HIGH_NORM:g}× as long as the model's "
                    "ordinary tokens, a common sign of overtraining: try an earlier checkpoint or a lower "
                    "learning rate."
                )
        report["encoders"][key] = info
    return report


def history(run_dir: str, name: str, read: Callable[[str], EmbeddingFile]) -> list[dict[str, float]]:
    """Mean vector norm of every checkpoint of a run, with the logged loss at that step when there is one."""
    losses: dict[int, float] = {}
    log = os.path.join(run_dir, f"{name}-log.csv")
    if os.path.isfile(log):
        with open(log, encoding="utf-8") as f:
            losses = {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}
    rows = []
    for step, path in list_checkpoints(run_dir, name):
        vectors = read(path).vectors
        norms = torch.cat([v.norm(dim=-1) for v in vectors.values()])
        rows.append({"step": step, "mean_norm": float(norms.mean()), "loss": losses.get(step, math.nan)})
    return rows
