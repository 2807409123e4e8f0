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
TYPICAL_CLIP_TOKEN_NORM = 0.4  # about the average token norm of CLIP's text encoders, when no model is at hand
FALLBACK_HIGH_NORM = 5.0  # against that rough figure, warn only when far beyond it (2.0): no false alarms


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


def _widths(tables: dict[str, torch.Tensor]) -> str:
    """'768' for one text encoder, 'clip_l 768 + clip_g 1280' for two."""
    if len(tables) == 1:
        return str(next(iter(tables.values())).shape[-1])
    return " + ".join(f"{k} {v.shape[-1]}" for k, v in sorted(tables.items(), key=lambda kv: kv[0] != "clip_l"))


def _fits(file: EmbeddingFile, reference: Reference | None) -> bool:
    return (
        reference is not None
        and set(reference.tables) == set(file.vectors)
        and all(reference.tables[k].shape[-1] == v.shape[-1] for k, v in file.vectors.items())
    )


def _mismatch(file: EmbeddingFile, family: str, reference: Reference) -> str:
    """Why the WebUI will skip it, in widths: the family names alone can be the same ("SD1" and "SD1")."""
    encoders = "text encoders are" if len(reference.tables) > 1 else "text encoder is"
    return (
        f"The vectors are {_widths(file.vectors)} wide (made for {family}), but the loaded model's {encoders} "
        f"{_widths(reference.tables)} wide ({reference.family}): the WebUI will skip this embedding."
    )


def _too_long(key: str, norms: list[float], typical: float, limit: float, against: str) -> str | None:
    """The overtraining warning, when any vector is more than ``limit`` × ``typical`` long."""
    long = [(i, n) for i, n in enumerate(norms) if n > limit * typical]
    if not long:
        return None
    which = ", ".join(f"{i} ({n:.2f})" for i, n in long)
    worst = max(n for _, n in long) / typical
    return (
        f"{key}: vector(s) {which} are up to {worst:.0f}× as long as {against} (~{typical:.2f}), over {limit:g}×: "
        "a common sign of overtraining. Try an earlier checkpoint or a lower learning rate."
    )


def _encoder_info(key: str, vectors: torch.Tensor, reference: Reference | None, top_k: int) -> tuple[dict, list]:
    info: dict[str, Any] = {"width": vectors.shape[-1], "norms": [round(float(n), 4) for n in vectors.norm(dim=-1)]}
    if not torch.isfinite(vectors).all():
        return info, [f"{key}: holds NaN or infinite values; the embedding is broken."]
    if reference is None:  # no model to compare with: against a typical CLIP token
        warning = _too_long(key, info["norms"], TYPICAL_CLIP_TOKEN_NORM, FALLBACK_HIGH_NORM, "a typical CLIP token")
        return info, [warning] if warning else []
    typical = float(reference.tables[key].float().norm(dim=-1).mean())
    info["token_norm"] = round(typical, 4)
    info["norm_ratio"] = [round(n / typical, 2) for n in info["norms"]]
    info["nearest"] = _nearest(vectors, reference.tables[key], reference.spell, top_k)
    warning = _too_long(key, info["norms"], typical, HIGH_NORM, "the loaded model's average token")
    return info, [warning] if warning else []


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
    if not file.webui_loads:
        report["warnings"].append(
            "The WebUI cannot load this file as it is: Convert writes it into the embeddings folder in the "
            "WebUI's own format."
        )
    counts = {k: v.shape[0] for k, v in file.vectors.items()}
    report["vectors"] = next(iter(counts.values()))
    if len(set(counts.values())) > 1:
        report["warnings"].append(f"The encoders hold different vector counts ({counts}); the WebUI uses clip_g's.")
    fits = _fits(file, reference)
    if fits:
        report["family"] = reference.family  # the loaded model knows better than a guess from widths
    elif reference is not None:
        report["warnings"].append(_mismatch(file, report["family"], reference))
    for key, vectors in file.vectors.items():
        info, warnings = _encoder_info(key, vectors, reference if fits else None, top_k)
        report["encoders"][key] = info
        report["warnings"] += warnings
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
