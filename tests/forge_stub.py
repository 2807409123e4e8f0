"""Just enough of Forge's ``modules`` and ``backend`` to import ``lib_ti.hosts.forge`` without Forge.

The adapter's SDXL logic (two text encoders, the pooled output with the size conditioning, the embeddings it makes
and reads) is then tested with small stand-ins of Forge's engines and databases; the live checks against a real
Forge are in tests/integration.
"""

from __future__ import annotations

import contextlib
import sys
import types
from typing import Iterator

import torch

FORGE_PACKAGES = ("lib_ti.hosts.forge", "lib_ti.hosts.common", "lib_ti.hosts.script_args")


class Embedding:
    """The attributes Forge's ``backend.text_processing.textual_inversion.Embedding`` has."""

    def __init__(self, vec, name, step=None):
        self.vec, self.name, self.step = vec, name, step
        self.shape, self.vectors = None, 0


class Database:
    """Forge's EmbeddingDatabase as the adapter uses it: names to embeddings, and the width it accepts."""

    def __init__(self, expected_shape: int):
        self.word_embeddings, self.skipped_embeddings, self.embedding_dirs = {}, {}, {}
        self.expected_shape = expected_shape

    def register_embedding_by_name(self, embedding, name):
        self.word_embeddings[name] = embedding

    def load_textual_inversion_embeddings(self, *args, **kwargs):
        pass


class Engine:
    """A text-processing engine: hidden states of ``width`` per prompt (and the pooled output for clip_g), made
    from the vectors of the embedding named in the prompt, so gradients reach them as in Forge."""

    def __init__(self, key: str, width: int, pooled: bool, tokens: int = 77):
        self.key, self.width, self.pooled, self.tokens = key, width, pooled, tokens
        self.embeddings = Database(expected_shape=2048)  # Forge gives both SDXL engines clip_l + clip_g widths
        self.calls = 0

    def __call__(self, prompts):
        self.calls += 1
        rows = []
        for prompt in prompts:
            found = [e for name, e in self.embeddings.word_embeddings.items() if name in prompt.split()]
            vec = found[0].vec if found else None
            vec = vec[self.key] if isinstance(vec, dict) else vec
            base = torch.ones(self.tokens, self.width)
            rows.append(base + (vec.sum() if vec is not None else 0.0))
        z = torch.stack(rows)
        sys.modules["backend.text_processing.classic_engine"].last_extra_generation_params["TI"] = "noted"
        return (z, z[:, 0, :]) if self.pooled else z


def sdxl_model(refiner: bool = False):
    """An SDXL diffusion engine as Forge builds it: two engines (the refiner only clip_g) and the size embedder."""
    model = types.SimpleNamespace(is_sdxl=True, is_sd1=False, is_sd2=False, is_inpaint=False)
    if not refiner:
        model.text_processing_engine_l = Engine("clip_l", 768, pooled=False)
    model.text_processing_engine_g = Engine("clip_g", 1280, pooled=True)
    model.embedder = lambda t: t.float().reshape(-1, 1).repeat(1, 256)  # each number as a 256-wide row
    return model


def _adapter_modules() -> dict:
    return {n: m for n, m in sys.modules.items() if n.startswith(FORGE_PACKAGES)}


@contextlib.contextmanager
def installed(monkeypatch, sd_model=None) -> Iterator[types.SimpleNamespace]:
    """The Forge adapter imported fresh over stand-in ``modules``/``backend``; afterwards sys.modules and
    ``lib_ti.hosts`` are as before, so no other test sees the stand-ins."""
    import lib_ti.hosts

    before = _adapter_modules()
    attributes = {n: vars(lib_ti.hosts)[n] for n in ("forge", "common", "script_args") if n in vars(lib_ti.hosts)}
    for name in before:
        del sys.modules[name]
    try:
        yield _install(monkeypatch, sd_model)
    finally:
        for name in _adapter_modules():
            del sys.modules[name]
        sys.modules.update(before)
        for name in ("forge", "common", "script_args"):
            vars(lib_ti.hosts).pop(name, None)
        vars(lib_ti.hosts).update(attributes)


def _install(monkeypatch, sd_model) -> types.SimpleNamespace:
    shared = types.ModuleType("modules.shared")
    shared.sd_model = sd_model
    shared.opts = types.SimpleNamespace(sdxl_crop_top=0, sdxl_crop_left=0, data={})
    shared.cmd_opts = types.SimpleNamespace(embeddings_dir="")
    classic = types.ModuleType("backend.text_processing.classic_engine")
    classic.last_extra_generation_params = {}
    textual_inversion = types.ModuleType("backend.text_processing.textual_inversion")
    textual_inversion.Embedding = Embedding
    stubs = {
        "modules": types.ModuleType("modules"),
        "modules.shared": shared,
        "modules.processing": types.ModuleType("modules.processing"),
        "modules.sd_models": types.ModuleType("modules.sd_models"),
        "modules.sd_samplers": types.ModuleType("modules.sd_samplers"),
        "modules.sd_schedulers": types.ModuleType("modules.sd_schedulers"),
        "backend": types.ModuleType("backend"),
        "backend.text_processing": types.ModuleType("backend.text_processing"),
        "backend.text_processing.classic_engine": classic,
        "backend.text_processing.textual_inversion": textual_inversion,
    }
    for name, module in stubs.items():
        monkeypatch.setitem(sys.modules, name, module)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(stubs[parent], child, module)
    import lib_ti.hosts.forge.embedding_db as embedding_db
    import lib_ti.hosts.forge.model as model

    return types.SimpleNamespace(model=model, embedding_db=embedding_db, shared=shared, classic=classic)
