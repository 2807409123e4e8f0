"""Words that name an embedding's checkpoint or its scaled vectors in any prompt: ``<name>-<step>``,
``<name>-x<w>``, ``<name>-<step>-x<w>``.

The test grid writes them into its cells' prompts, and the WebUI adapter resolves them in every txt2img
generation (from the run folder recorded in the embedding), so a cell's infotext reproduces the cell after a
reload or a restart, without copying checkpoints into the embeddings folder.
"""

from __future__ import annotations

import re

import torch

from lib_ti.embeddings.files import load_embedding
from lib_ti.training.paths import list_checkpoints


def alias(name: str, step: str | None = None, scale: float | None = None) -> str:
    """The word a prompt uses for a checkpoint (``<name>-<step>``) or for scaled vectors (``<name>-x<w>``,
    ``<name>-<step>-x<w>``). TI Trainer resolves these words in every txt2img generation, so a grid cell's
    infotext reproduces the cell."""
    word = name
    if step and step != "final":
        word += f"-{step}"
    if scale is not None and scale != 1:
        word += f"-x{scale:g}"
    return word


def parse_alias(word: str, names: list[str]) -> tuple[str, int | None, float | None] | None:
    """(name, step, scale) when ``word`` is an alias of one of ``names``; None otherwise (also for a plain name)."""
    lowered = word.lower()
    for name in sorted(names, key=len, reverse=True):
        if not lowered.startswith(name.lower() + "-"):
            continue
        found = re.fullmatch(r"(\d+)(?:-x(\d+(?:\.\d+)?))?|x(\d+(?:\.\d+)?)", lowered[len(name) + 1 :])
        if found:
            step, scale = found.group(1), found.group(2) or found.group(3)
            return name, int(step) if step else None, float(scale) if scale else None
    return None


def aliases_in_prompt(prompt: str, names: list[str]) -> list[tuple[str, str, int | None, float | None]]:
    """Every alias word in the prompt: (word, name, step, scale), each word once."""
    known = {n.lower() for n in names}
    out, seen = [], set()
    for match in re.finditer(r"(?<![\w.\-])[\w.\-]+(?<!\.)", prompt):
        word = match.group(0)
        if word in seen or word.lower() in known:
            continue
        parsed = parse_alias(word, names)
        if parsed:
            seen.add(word)
            out.append((word, *parsed))
    return out


def alias_vectors(
    name: str, step: int | None, scale: float | None, vectors: dict[str, torch.Tensor] | None, run_dir: str
) -> tuple[dict[str, torch.Tensor], str] | None:
    """The vectors an alias stands for and the file they come from (``""``: the embedding itself), or None when
    that checkpoint is not in the run folder."""
    path = ""
    if step is not None:
        found = dict(list_checkpoints(run_dir, name)) if run_dir else {}
        if step not in found:
            return None
        path = found[step]
        vectors = load_embedding(path)[0]
    if vectors is None:
        return None
    if scale is not None:
        vectors = {k: v * scale for k, v in vectors.items()}
    return vectors, path
