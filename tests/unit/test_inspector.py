"""The inspector's warnings: the widths when the loaded model cannot use an embedding; overtrained vectors."""

import torch

from lib_ti.embeddings.formats import EmbeddingFile
from lib_ti.embeddings.inspector import Reference, inspect


def embedding(**vectors):
    return EmbeddingFile("/x/e.safetensors", "kohya / A1111 .safetensors", vectors, {}, "e")


def vectors_of_norm(*norms, width=768):
    return torch.stack([torch.full((width,), n / width**0.5) for n in norms])


def test_a_width_mismatch_says_the_widths_even_when_the_families_match():
    tiny_sd1 = Reference("SD1", {"clip_l": torch.randn(10, 32)}, spell=str)
    warnings = inspect(embedding(clip_l=vectors_of_norm(0.4)), tiny_sd1)["warnings"]
    assert warnings == [
        "The vectors are 768 wide (made for SD1), but the loaded model's text encoder is 32 wide (SD1): "
        "the WebUI will skip this embedding."
    ]
    sdxl = Reference("SDXL", {"clip_l": torch.randn(4, 768), "clip_g": torch.randn(4, 1280)}, spell=str)
    (warning,) = inspect(embedding(clip_l=vectors_of_norm(0.4, width=1024)), sdxl)["warnings"]
    assert "1024 wide (made for SD2)" in warning and "text encoders are clip_l 768 + clip_g 1280 wide (SDXL)" in warning


def test_vectors_far_longer_than_a_token_warn_without_a_model_to_compare_with():
    report = inspect(embedding(clip_l=vectors_of_norm(0.5, 12.0, 15.0)))
    (warning,) = report["warnings"]
    assert "vector(s) 1 (12.00), 2 (15.00) are up to 38× as long as a typical CLIP token (~0.40)" in warning
    assert "overtraining" in warning
    tiny_sd1 = Reference("SD1", {"clip_l": torch.randn(10, 32)}, spell=str)
    assert any("overtraining" in w for w in inspect(embedding(clip_l=vectors_of_norm(13.0)), tiny_sd1)["warnings"])


def test_ordinary_norms_raise_no_warning():
    assert inspect(embedding(clip_l=vectors_of_norm(0.3, 0.6, 1.1)))["warnings"] == []
    table = vectors_of_norm(*([0.4] * 8))
    reference = Reference("SD1", {"clip_l": table}, spell=str)
    report = inspect(embedding(clip_l=vectors_of_norm(0.5, 1.1)), reference)
    assert report["warnings"] == [] and report["encoders"]["clip_l"]["norm_ratio"] == [1.25, 2.75]
    assert inspect(embedding(clip_l=vectors_of_norm(12.0)), reference)["warnings"][0].startswith(
        "clip_l: vector(s) 0 (12.00) are up to 30× as long as the loaded model's average token (~0.40), over 3×"
    )


def test_a_layout_the_webui_cannot_load_says_to_convert_it():
    file = embedding(clip_l=vectors_of_norm(0.4), clip_g=vectors_of_norm(0.4, width=1280))
    assert inspect(file)["warnings"] == []
    file.webui_loads = False
    assert inspect(file)["warnings"][0].startswith("The WebUI cannot load this file as it is: Convert")
