"""Quality scores as the Textual Inversion papers measure them, and the advice users look for.

Image similarity: mean CLIP cosine similarity between a cell and the training images (does it show the concept?).
Text similarity: CLIP similarity between the cell and its prompt with the embedding taken out (does it still
follow the rest of the prompt?). Overtraining raises the first and lowers the second.
"""

from __future__ import annotations

import math
import re
from typing import Any, Protocol

import torch
from PIL import Image

from lib_ti.grid.plan import PLACEHOLDER, name_pattern, remove_name


class ClipScorer(Protocol):
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor: ...
    def encode_texts(self, texts: list[str]) -> torch.Tensor: ...


class TransformersClip:
    """A transformers CLIPModel + CLIPProcessor (any size): what users most often have on disk."""

    def __init__(self, model, processor):
        self.model, self.processor = model.eval(), processor

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        inputs = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        return _unit(_features(self.model.get_image_features(**inputs)))

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        inputs = self.processor(text=texts, return_tensors="pt", padding=True, truncation=True)
        return _unit(_features(self.model.get_text_features(**inputs)))


def _features(output) -> torch.Tensor:
    """Newer transformers return an output object; older ones the tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def prompt_without(prompt: str, name: str) -> str:
    """The prompt with the embedding (its checkpoint/scale words and weight syntax too) taken out, for text
    similarity."""
    return remove_name(re.sub(name_pattern(name, aliases=True), PLACEHOLDER, prompt, flags=re.IGNORECASE)) or (
        "a picture"
    )


def score_cells(
    cells: list[dict[str, Any]], images: list[Image.Image], training: list[Image.Image], scorer: ClipScorer, name: str
) -> None:
    """Adds image_similarity and text_similarity to each cell (in place)."""
    reference = scorer.encode_images(training).mean(dim=0, keepdim=True)
    reference = _unit(reference)
    cell_features = scorer.encode_images(images)
    text_features = scorer.encode_texts([prompt_without(c["prompt"], name) for c in cells])
    image_sim = (cell_features @ reference.T).squeeze(-1)
    text_sim = (cell_features * text_features).sum(dim=-1)
    for cell, i_sim, t_sim in zip(cells, image_sim.tolist(), text_sim.tolist()):
        cell["image_similarity"], cell["text_similarity"] = round(i_sim, 4), round(t_sim, 4)


def best_checkpoint(cells: list[dict[str, Any]]) -> tuple[str, dict[str, float]] | None:
    """The checkpoint whose cells balance both similarities best (harmonic mean of their means, embedding cells)."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for cell in cells:
        if cell.get("strength") != "without" and "image_similarity" in cell:
            by_label.setdefault(cell["checkpoint"], []).append(cell)
    if not by_label:
        return None
    summary = {}
    for label, group in by_label.items():
        image = sum(c["image_similarity"] for c in group) / len(group)
        text = sum(c["text_similarity"] for c in group) / len(group)
        summary[label] = 2 * image * text / (image + text) if image > 0 and text > 0 else -math.inf
    best = max(summary, key=summary.get)
    return best, summary


def advice(warnings: list[str], cells: list[dict[str, Any]]) -> list[str]:
    """Turn the inspector's warnings and the scores into what to do next."""
    out = []
    if any("overtraining" in w for w in warnings):
        out.append("Looks overtrained: use an earlier checkpoint, or train again with a lower learning rate.")
    scored = [c for c in cells if "image_similarity" in c]
    base = [c["image_similarity"] for c in scored if c["strength"] == "without"]
    used = [c["image_similarity"] for c in scored if c["strength"] != "without"]
    if base and used and max(used) - max(base) < 0.02:
        out.append(
            "Weak effect: the cells with the embedding look no closer to the training images than those "
            "without it. Train more steps, raise the learning rate, or add vectors."
        )
    best = best_checkpoint(cells)
    if best is not None and len(best[1]) > 1:
        out.append(f"Best balance of likeness and prompt-following: checkpoint {best[0]}.")
    return out
