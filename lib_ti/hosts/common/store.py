"""What each WebUI's embedding database gives the shared host code, and the prompt cache both WebUIs keep.

A1111 keeps one embedding database in ``sd_hijack``; Forge keeps one per text-processing engine. Each WebUI package
has a module with the functions of :class:`EmbeddingStore`; the shared code is handed that module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class StoredEmbedding:
    """An embedding as the WebUI loaded it: its vectors per text encoder, its file, and the hash it reports."""

    name: str
    vectors: dict[str, torch.Tensor]
    filename: str
    shorthash: str
    step: int | None


class EmbeddingStore(Protocol):
    """The functions a WebUI package's embedding-database module provides."""

    def embeddings_dir(self) -> str: ...
    def existing_embedding_names(self) -> set[str]: ...
    def reload_embeddings(self) -> None: ...
    def embedding_record(self, name: str) -> StoredEmbedding: ...
    def embedding_file(self, name: str) -> str: ...
    def usable_embedding_names(self) -> list[str]: ...
    def resolve_prompt_aliases(self, p, run_root: str) -> None: ...


def clear_conditioning_cache() -> None:
    """The WebUI caches conditioning by prompt text, not by vectors: clear it whenever the vectors change.

    The caches are lists whose length differs between WebUIs (Forge keeps the infotext extras in a third slot).
    """
    from modules import processing

    for cls, names in (
        (processing.StableDiffusionProcessing, ("cached_c", "cached_uc")),
        (processing.StableDiffusionProcessingTxt2Img, ("cached_hr_c", "cached_hr_uc")),
    ):
        for name in names:
            setattr(cls, name, [None] * len(getattr(cls, name, [None, None])))


def not_usable(name: str, skipped, expected_shape, known) -> Exception:
    """The error for an embedding the loaded model cannot use: skipped for its width, or not there at all."""
    from lib_ti.errors import UserError

    if skipped is not None:
        return UserError(
            f"The embedding {name!r} does not fit the loaded model: its vectors are {skipped.shape} wide, "
            f"the model needs {expected_shape} (an SD1 embedding does not work on SDXL, and so on)."
        )
    return UserError(f"Unknown embedding {name!r}. Known: {', '.join(sorted(known)) or 'none'}.")
