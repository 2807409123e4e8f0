"""SDXL in Forge's adapter: both text encoders, the pooled output with the size conditioning, and the embeddings
it makes and reads (Forge itself replaced by the stand-ins in tests/forge_stub.py)."""

from __future__ import annotations

import types

import pytest
import torch

import forge_stub
from lib_ti.errors import UserError


@pytest.fixture
def forge(monkeypatch):
    model = forge_stub.sdxl_model()
    with forge_stub.installed(monkeypatch, model) as stub:
        stub.sd_model = model
        yield stub


def _adapter(forge):
    """A WebUIModel on the stand-in SDXL model, without the UNet parts the text side does not need."""
    adapter = object.__new__(forge.model.WebUIModel)
    adapter.m, adapter.family = forge.sd_model, "sdxl"
    adapter.engines = forge.model._engines(forge.sd_model)
    return adapter


def _sdxl_vectors(n=2):
    return {"clip_l": torch.randn(n, 768, requires_grad=True), "clip_g": torch.randn(n, 1280, requires_grad=True)}


def test_sdxl_base_trains_both_encoders_and_the_refiner_is_refused(forge):
    engines = forge.model._engines(forge.sd_model)
    assert list(engines) == ["clip_l", "clip_g"]
    assert engines["clip_l"] is forge.sd_model.text_processing_engine_l
    assert engines["clip_g"] is forge.sd_model.text_processing_engine_g
    with pytest.raises(UserError, match="refiner"):
        forge.model._engines(forge_stub.sdxl_model(refiner=True))
    with pytest.raises(UserError, match="Flux"):
        forge.model._engines(types.SimpleNamespace(is_sdxl=False, is_sd1=False, is_sd2=False))


def test_conditioning_has_both_encoders_side_by_side_and_the_sizes_after_the_pooled_output(forge):
    forge.shared.opts.sdxl_crop_top, forge.shared.opts.sdxl_crop_left = 3, 5
    cond = _adapter(forge).encode_text(["a photo", "a painting"], (128, 192))  # (height, width)

    assert cond["crossattn"].shape == (2, 77, 768 + 1280)
    assert torch.equal(cond["crossattn"][..., :768], torch.ones(2, 77, 768))  # clip_l first, as Forge's sampler
    vector = cond["vector"]
    assert vector.shape == (2, 1280 + 6 * 256)  # pooled clip_g, then six size numbers of 256 each
    sizes = vector[:, 1280:].reshape(2, 6, 256)[:, :, 0]
    # original height, width; crop top, left; target height, width, as Forge's txt2img conditions SDXL
    assert sizes.tolist() == [[128, 192, 3, 5, 128, 192]] * 2


def test_training_prompts_are_not_noted_for_the_next_infotext(forge):
    forge.classic.last_extra_generation_params = {"TI": "before"}
    _adapter(forge).encode_text(["a photo"], (128, 128))
    assert forge.classic.last_extra_generation_params == {"TI": "before"}


def test_gradients_reach_both_vectors_through_the_sdxl_conditioning(forge):
    adapter, vectors = _adapter(forge), _sdxl_vectors()
    embedding = forge.embedding_db.make_embedding("mystyle", vectors)
    for engine in adapter.engines.values():
        engine.embeddings.register_embedding_by_name(embedding, "mystyle")

    cond = adapter.encode_text(["mystyle portrait"], (128, 128))
    (cond["crossattn"].sum() + cond["vector"].sum()).backward()

    assert vectors["clip_l"].grad is not None and vectors["clip_l"].grad.abs().sum() > 0
    assert vectors["clip_g"].grad is not None and vectors["clip_g"].grad.abs().sum() > 0


def test_an_sdxl_embedding_has_the_width_forges_sdxl_engines_accept(forge):
    vectors = _sdxl_vectors(3)
    embedding = forge.embedding_db.make_embedding("mystyle", vectors)
    assert embedding.shape == forge.sd_model.text_processing_engine_g.embeddings.expected_shape == 2048
    assert embedding.vectors == 3
    assert embedding.vec["clip_l"] is vectors["clip_l"] and embedding.vec["clip_g"] is vectors["clip_g"]


def test_an_sdxl_embedding_forge_loaded_is_read_with_both_encoders(forge):
    vec = {"clip_l": torch.randn(2, 768, dtype=torch.float16), "clip_g": torch.randn(2, 1280)}
    loaded = forge_stub.Embedding(vec, "mystyle", step=40)
    loaded.filename = "/nowhere/mystyle.safetensors"
    for engine in (forge.sd_model.text_processing_engine_l, forge.sd_model.text_processing_engine_g):
        engine.embeddings.register_embedding_by_name(loaded, "mystyle")

    record = forge.embedding_db.embedding_record("mystyle")

    assert set(record.vectors) == {"clip_l", "clip_g"}
    assert record.vectors["clip_l"].dtype == torch.float32 and record.vectors["clip_g"].shape == (2, 1280)
    assert record.step == 40 and record.filename == "/nowhere/mystyle.safetensors"
    assert forge.embedding_db.usable_embedding_names() == ["mystyle"]
