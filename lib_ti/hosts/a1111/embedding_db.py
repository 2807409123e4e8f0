"""A1111's embedding database (``sd_hijack.model_hijack.embedding_db``): what it has loaded, reloading it, and
vectors that live only in memory. The functions of ``lib_ti.hosts.common.store.EmbeddingStore``."""

from __future__ import annotations

import logging
import os

import torch

from modules import devices, sd_hijack, shared
from modules.textual_inversion.textual_inversion import Embedding

from lib_ti.errors import UserError
from lib_ti.hosts.common.store import StoredEmbedding, clear_conditioning_cache, not_usable

log = logging.getLogger(__name__)


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


def _loaded(name: str):
    """The WebUI's loaded Embedding of that name, or a message saying why it cannot be tested."""
    db = sd_hijack.model_hijack.embedding_db
    existing_embedding_names()
    if name in db.word_embeddings:
        return db.word_embeddings[name]
    raise not_usable(name, db.skipped_embeddings.get(name), db.expected_shape, db.word_embeddings)


def embedding_record(name: str) -> StoredEmbedding:
    record = _loaded(name)
    vec = record.vec if isinstance(record.vec, dict) else {"clip_l": record.vec}
    vectors = {k: v.detach().float().cpu() for k, v in vec.items()}
    return StoredEmbedding(name, vectors, record.filename or "", record.shorthash or "", record.step)


def embedding_file(name: str) -> str:
    """The file of a loaded or skipped embedding (the inspector reads both)."""
    db = sd_hijack.model_hijack.embedding_db
    existing_embedding_names()
    record = db.word_embeddings.get(name) or db.skipped_embeddings.get(name)
    if record is None or not record.filename:
        raise UserError(f"Unknown embedding {name!r}.")
    return record.filename


def usable_embedding_names() -> list[str]:
    """Embeddings the loaded model can use (the WebUI skips those made for another model's width)."""
    db = sd_hijack.model_hijack.embedding_db
    if shared.sd_model is not None:
        db.load_textual_inversion_embeddings()
    return sorted(db.word_embeddings)


def make_embedding(name: str, vec, vectors: dict[str, torch.Tensor], shorthash: str | None = None) -> Embedding:
    """A WebUI Embedding record for vectors that live in memory (the run's, a checkpoint's, scaled ones)."""
    embedding = Embedding(vec, name)
    embedding.vectors = next(iter(vectors.values())).shape[0]
    embedding.shape = sum(v.shape[-1] for v in vectors.values())
    if shorthash:
        embedding.hash = embedding.shorthash = shorthash
    return embedding


def webui_vec(vectors: dict[str, torch.Tensor]):
    moved = {k: v.to(devices.device, torch.float32) for k, v in vectors.items()}
    return moved["clip_l"] if set(moved) == {"clip_l"} else moved


def route_name(name: str, embedding: Embedding) -> None:
    """Prompts naming ``name`` use ``embedding`` when they are encoded, while the embedding lists (Extra Networks'
    cards, /sdapi/v1/embeddings) keep what they had: they expect a file behind every entry, and vectors that live
    only in memory (the run being trained, a checkpoint alias) have none."""
    db = sd_hijack.model_hijack.embedding_db
    listed = db.word_embeddings.get(name)
    db.word_embeddings[name] = embedding  # so the WebUI drops an older lookup entry of this name first
    try:
        db.register_embedding_by_name(embedding, shared.sd_model, name)
    finally:
        if listed is None:
            db.word_embeddings.pop(name, None)
        else:
            db.word_embeddings[name] = listed


def routed(name: str):
    """The embedding prompts naming ``name`` reach now, or None (a reload of the database drops in-memory ones)."""
    db = sd_hijack.model_hijack.embedding_db
    ids = shared.sd_model.cond_stage_model.tokenize([name])[0]
    return next((e for found, e in db.ids_lookup.get(ids[0], []) if found == ids and e.name == name), None)


def run_dir_of(name: str, run_root: str) -> str:
    """Where the embedding's checkpoints are: recorded in its file, else the default run folder."""
    from lib_ti.embeddings.files import load_embedding

    record = sd_hijack.model_hijack.embedding_db.word_embeddings.get(name)
    filename = getattr(record, "filename", None) or ""
    meta = load_embedding(filename)[1] if filename.endswith(".safetensors") and os.path.isfile(filename) else {}
    return meta.get("ti_run_dir") or os.path.join(run_root, name)


def resolve_aliases(prompts: list[str], run_root: str) -> list[str]:
    """Make every ``<name>-<step>`` / ``<name>-x<w>`` word in these prompts reach that checkpoint's (scaled)
    vectors for this generation. Returns a line per word that names no saved checkpoint."""
    from lib_ti.grid.aliases import alias_vectors, aliases_in_prompt
    from lib_ti.grid.run import file_shorthash

    db = sd_hijack.model_hijack.embedding_db
    names = list(db.word_embeddings)
    problems, changed, done = [], False, set()
    for word, name, step, scale in (a for prompt in prompts for a in aliases_in_prompt(prompt, names)):
        if word in done:
            continue
        done.add(word)
        record = db.word_embeddings[name]
        vec = record.vec if isinstance(record.vec, dict) else {"clip_l": record.vec}
        run_dir = run_dir_of(name, run_root)
        resolved = alias_vectors(name, step, scale, {k: v.detach().float().cpu() for k, v in vec.items()}, run_dir)
        if resolved is None:
            problems.append(f"TI Trainer: {word!r}: {name} has no checkpoint at step {step} in {run_dir}.")
            continue
        vectors, path = resolved
        shorthash = file_shorthash(path) if path else record.shorthash
        key = (shorthash, scale)
        if getattr(routed(word), "ti_alias_key", None) == key:
            continue
        embedding = make_embedding(word, webui_vec(vectors), vectors, shorthash)
        embedding.ti_alias_key = key
        route_name(word, embedding)
        changed = True
    if changed:  # the WebUI caches conditioning by prompt text: a word that now means other vectors must miss it
        clear_conditioning_cache()
    return problems


def resolve_prompt_aliases(p, run_root: str) -> None:
    """Before a generation's prompts are encoded (an always-on script's ``process``): resolve checkpoint and scale
    words in every prompt it will encode, hires-fix ones included."""
    prompts = []
    for attr in ("all_prompts", "all_negative_prompts", "all_hr_prompts", "all_hr_negative_prompts"):
        prompts += [text for text in getattr(p, attr, None) or [] if isinstance(text, str)]
    for line in resolve_aliases(prompts or [p.prompt, p.negative_prompt], run_root):
        log.warning(line)
