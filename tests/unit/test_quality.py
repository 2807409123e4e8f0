"""Quality scores on a tiny real CLIPModel, the best-checkpoint choice, the advice, and a grid without CLIP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lib_ti.grid.quality import TransformersClip, advice, best_checkpoint, prompt_without, score_cells
from tiny_model import tokenizer_dir


@pytest.fixture(scope="module")
def scorer():
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir())
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return TransformersClip(CLIPModel(config), CLIPProcessor(image_processor=images, tokenizer=tokenizer))


def noise(seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 48, 3), dtype=np.uint8))


def test_prompt_without_the_embedding():
    assert prompt_without("(tok:1.2) portrait, tok art", "tok") == "portrait, art"
    assert prompt_without("tok", "tok") == "a picture"
    assert prompt_without("beautiful (tok-300:1.2) art", "tok") == "beautiful art"
    assert prompt_without("tok-300-x0.8, portrait", "tok") == "portrait"


def test_scores_rank_the_training_image_first(scorer):
    training = [noise(1)]
    cells = [{"prompt": "(tok:1) portrait", "strength": "1"}, {"prompt": "(tok:1) portrait", "strength": "1"}]
    score_cells(cells, [noise(1), noise(99)], training, scorer, "tok")
    assert cells[0]["image_similarity"] == pytest.approx(1.0, abs=1e-4)
    assert cells[1]["image_similarity"] < cells[0]["image_similarity"]
    assert all(-1 <= c["text_similarity"] <= 1 for c in cells)


def test_best_checkpoint_and_advice():
    cells = [
        {"checkpoint": "100", "strength": "1", "image_similarity": 0.30, "text_similarity": 0.30},
        {"checkpoint": "200", "strength": "1", "image_similarity": 0.50, "text_similarity": 0.28},
        {"checkpoint": "final", "strength": "1", "image_similarity": 0.70, "text_similarity": 0.05},
        {"checkpoint": "final", "strength": "without", "image_similarity": 0.10, "text_similarity": 0.40},
    ]
    best, summary = best_checkpoint(cells)
    assert best == "200" and set(summary) == {"100", "200", "final"}
    tips = advice(["clip_l: ... a common sign of overtraining ..."], cells)
    assert any("overtrained" in t for t in tips) and any("checkpoint 200" in t for t in tips)
    weak = [
        {"checkpoint": "final", "strength": s, "image_similarity": v, "text_similarity": 0.3}
        for s, v in (("without", 0.40), ("1", 0.41))
    ]
    assert any("Weak effect" in t for t in advice([], weak))
