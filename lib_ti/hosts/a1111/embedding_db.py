"""The WebUI's embedding database: what it has loaded, reloading it, and vectors that live only in memory."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

from modules import devices, processing, sd_hijack, shared
from modules.textual_inversion.textual_inversion import Embedding

from lib_ti.errors import UserError


def clear_conditioning_cache() -> None:
    """The WebUI caches conditioning by prompt text, not by vectors: clear it whenever the vectors change."""
    processing.StableDiffusionProcessing.cached_c = [None, None]
    processing.StableDiffusionProcessing.cached_uc = [None, None]
    processing.StableDiffusionProcessingTxt2Img.cached_hr_c = [None, None]
    processing.StableDiffusionProcessingTxt2Img.cached_hr_uc = [None, None]


def reload_embeddings() -> None:
    """Reload the embedding database so new files work in txt2img without a restart."""
    clear_conditioning_cache()
    if shared.sd_model is not None:
        sd_hijack.model_hijack.embedding_db.load_textual_inversion_embeddings(force_reload=True)


def existing_embedding_names() -> set[str]:
    """Names the WebUI knows, after picking up files added or removed since its last look."""
    db = sd_hijack.model_hijack.embedding_db
    if shared.sd_model is not None:
        db.load_textual_inversion_embeddings()
    return set(db.word_embeddings) | set(db.skipped_embeddings)


def embeddings_dir() -> str:
    return shared.cmd_opts.embeddings_dir


def embedding_record(name: str):
    """The WebUI's loaded Embedding of that name, or a message saying why it cannot be tested."""
    db = sd_hijack.model_hijack.embedding_db
    existing_embedding_names()
    if name in db.word_embeddings:
        return db.word_embeddings[name]
    if name in db.skipped_embeddings:
        skipped = db.skipped_embeddings[name]
        raise UserError(
            f"The embedding {name!r} does not fit the loaded model: its vectors are {skipped.shape} wide, "
            f"the model needs {db.expected_shape} (an SD1 embedding does not work on SDXL, and so on)."
        )
    raise UserError(f"Unknown embedding {name!r}. Known: {', '.join(sorted(db.word_embeddings)) or 'none'}.")


def make_embedding(
    name: str, vec, vectors: dict[str, torch.Tensor], shorthash: str | None = None, filename: str | None = None
) -> Embedding:
    """A WebUI Embedding record for vectors that live in memory (the run's, a checkpoint's, scaled ones).

    It gets a file name (the file it stands for, existing or not): the Textual Inversion page fails to list an
    embedding without one.
    """
    embedding = Embedding(vec, name)
    embedding.filename = filename or os.path.join(embeddings_dir(), f"{name}.safetensors")
    embedding.vectors = next(iter(vectors.values())).shape[0]
    embedding.shape = sum(v.shape[-1] for v in vectors.values())
    if shorthash:
        embedding.hash = embedding.shorthash = shorthash
    return embedding


def webui_vec(vectors: dict[str, torch.Tensor]):
    moved = {k: v.to(devices.device, torch.float32) for k, v in vectors.items()}
    return moved["clip_l"] if set(moved) == {"clip_l"} else moved


@contextlib.contextmanager
def embedding_override(name: str, vectors: dict[str, torch.Tensor], shorthash: str) -> Iterator[None]:
    """For one cell, prompts naming ``name`` use these vectors; the WebUI's own entry comes back afterwards."""
    db = sd_hijack.model_hijack.embedding_db
    original = db.word_embeddings.get(name)
    record = make_embedding(name, webui_vec(vectors), vectors, shorthash, getattr(original, "filename", None))
    db.register_embedding_by_name(record, shared.sd_model, name)
    clear_conditioning_cache()
    try:
        yield
    finally:
        db.register_embedding_by_name(original, shared.sd_model, name)
        clear_conditioning_cache()
