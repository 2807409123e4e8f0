"""Forge's embedding databases: one per text-processing engine of the loaded model (two for SDXL), loaded from
the embeddings folder when the model loads. The functions of ``lib_ti.hosts.common.store.EmbeddingStore``.

Forge never re-reads that folder while the model stays loaded, and its API and Textual Inversion card list read
databases of their own; after a new file lands, :func:`reload_embeddings` refreshes all of them, so txt2img uses it
without a restart.
"""

from __future__ import annotations

import logging
import os
import sys

import torch

from modules import shared

from lib_ti.errors import UserError
from lib_ti.hosts.common.grid import run_dir_of
from lib_ti.hosts.common.store import StoredEmbedding, clear_conditioning_cache, not_usable

ENGINE_NAMES = ("text_processing_engine", "text_processing_engine_l", "text_processing_engine_g")
log = logging.getLogger(__name__)
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin", ".png", ".webp", ".jxl", ".avif")


def engines(model=None) -> list:
    """The loaded model's ClassicTextProcessingEngines, each holding an embedding database."""
    model = model if model is not None else shared.sd_model
    found = [getattr(model, name, None) for name in ENGINE_NAMES] if model is not None else []
    return [engine for engine in found if engine is not None and hasattr(engine, "embeddings")]


def embeddings_dir() -> str:
    return shared.cmd_opts.embeddings_dir


def _webui_databases() -> list:
    """The databases behind /sdapi/v1/embeddings and the Textual Inversion cards, which Forge keeps apart."""
    found = []
    cards = sys.modules.get("modules.ui_extra_networks_textual_inversion")
    if cards is not None and hasattr(cards, "embedding_db"):
        found.append(cards.embedding_db)
    app = getattr(getattr(shared, "demo", None), "server_app", None)
    for route in getattr(app, "routes", []):
        if getattr(route, "path", "") == "/sdapi/v1/embeddings":
            api = getattr(getattr(route, "endpoint", None), "__self__", None)
            if hasattr(api, "embedding_db"):
                found.append(api.embedding_db)
    return found


def reload_embeddings() -> None:
    """Re-read the embeddings folder into every database, so new files work in txt2img without a restart."""
    clear_conditioning_cache()
    for engine in engines():
        engine.embeddings.load_textual_inversion_embeddings()
    for db in _webui_databases():
        db.load_textual_inversion_embeddings(force_reload=True, sync_with_sd_model=False)


def _changed(db) -> bool:
    return any(folder.has_changed() for folder in db.embedding_dirs.values())


def existing_embedding_names() -> set[str]:
    """Names the WebUI knows, after picking up files added or removed since its last look."""
    found = engines()
    if not found:  # no model loaded yet: the files themselves
        folder = embeddings_dir()
        names = set()
        for _, _, files in os.walk(folder, followlinks=True):
            names |= {os.path.splitext(f)[0] for f in files if f.lower().endswith(EMBEDDING_SUFFIXES)}
        return names
    if any(_changed(engine.embeddings) for engine in found):
        reload_embeddings()
    db = found[0].embeddings
    return set(db.word_embeddings) | set(db.skipped_embeddings)


def _database():
    """The first engine's database, loading the chosen model first if Forge has not yet (it waits for a
    generation)."""
    from modules import sd_models

    found = engines() or engines(sd_models.forge_model_reload()[0])
    if not found:
        raise UserError("The loaded model has no text encoder TI Trainer can use (SD1, SD2 or SDXL).")
    existing_embedding_names()
    return found[0].embeddings


def embedding_record(name: str) -> StoredEmbedding:
    from lib_ti.grid.run import file_shorthash

    db = _database()
    if name not in db.word_embeddings:
        raise not_usable(name, db.skipped_embeddings.get(name), db.expected_shape, db.word_embeddings)
    record = db.word_embeddings[name]
    vec = record.vec if isinstance(record.vec, dict) else {"clip_l": record.vec}
    vectors = {k: v.detach().float().cpu() for k, v in vec.items()}
    filename = getattr(record, "filename", "") or ""
    shorthash = file_shorthash(filename) if filename and os.path.isfile(filename) else ""
    return StoredEmbedding(name, vectors, filename, shorthash, record.step)


def embedding_file(name: str) -> str:
    """The file of a loaded or skipped embedding (the inspector reads both)."""
    db = _database()
    record = db.word_embeddings.get(name) or db.skipped_embeddings.get(name)
    if record is None or not getattr(record, "filename", ""):
        raise UserError(f"Unknown embedding {name!r}.")
    return record.filename


def make_embedding(name: str, vectors: dict[str, torch.Tensor]):
    """A Forge Embedding for vectors in memory: one tensor for SD1/SD2, a dict for SDXL's two encoders.

    The tensors are used as they are (no copy), so while training the prompts carry the vectors' gradients."""
    from backend.text_processing.textual_inversion import Embedding

    embedding = Embedding(vectors["clip_l"] if set(vectors) == {"clip_l"} else dict(vectors), name)
    embedding.vectors = next(iter(vectors.values())).shape[0]
    embedding.shape = sum(v.shape[-1] for v in vectors.values())
    return embedding


def usable_embedding_names() -> list[str]:
    """Embeddings the loaded model can use: files Forge loaded (not the in-memory checkpoint and scale words)."""
    found = engines()
    if not found:
        return sorted(existing_embedding_names())
    existing_embedding_names()
    return sorted(n for n, e in found[0].embeddings.word_embeddings.items() if getattr(e, "filename", ""))


def _route(word: str, vectors: dict[str, torch.Tensor], key) -> bool:
    """Prompts naming ``word`` reach these vectors in every engine; False when they already did."""
    embedding = make_embedding(word, vectors)
    embedding.ti_alias_key = key
    changed = False
    for engine in engines():
        current = engine.embeddings.word_embeddings.get(word)
        if getattr(current, "ti_alias_key", None) != key:
            engine.embeddings.register_embedding_by_name(embedding, word)
            changed = True
    return changed


def resolve_prompt_aliases(p, run_root: str) -> None:
    """Before a generation's prompts are encoded (an always-on script's ``process``): make every
    ``<name>-<step>`` / ``<name>-x<w>`` word reach that checkpoint's (scaled) vectors."""
    from lib_ti.grid.aliases import alias_vectors, aliases_in_prompt
    from lib_ti.grid.run import file_shorthash

    found = engines()
    if not found:
        return
    prompts = []
    for attr in ("all_prompts", "all_negative_prompts", "all_hr_prompts", "all_hr_negative_prompts"):
        prompts += [text for text in getattr(p, attr, None) or [] if isinstance(text, str)]
    db = found[0].embeddings
    names = [n for n, e in db.word_embeddings.items() if getattr(e, "filename", "")]
    changed, done = False, set()
    for word, name, step, scale in (a for text in prompts or [p.prompt] for a in aliases_in_prompt(text, names)):
        if word in done:
            continue
        done.add(word)
        record = embedding_record(name)
        run_dir = run_dir_of(sys.modules[__name__], name, run_root)
        resolved = alias_vectors(name, step, scale, record.vectors, run_dir)
        if resolved is None:
            log.warning("TI Trainer: %r: %s has no checkpoint at step %s in %s.", word, name, step, run_dir)
            continue
        vectors, path = resolved
        changed |= _route(word, vectors, (file_shorthash(path) if path else record.shorthash, scale))
    if changed:  # Forge caches conditioning by prompt text: a word that now means other vectors must miss it
        clear_conditioning_cache()
