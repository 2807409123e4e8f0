"""A new run never mixes with an earlier one in its run folder; continuing a run keeps it; previews reproduce."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch
from PIL import Image

from helpers import tiny_model, train_values
from lib_ti.embeddings.files import load_embedding
from lib_ti.embeddings.formats import read_embedding
from lib_ti.embeddings.inspector import history
from lib_ti.grid.plan import pick_checkpoints
from lib_ti.training.config import parse_config
from lib_ti.training.paths import list_checkpoints, preview_caption
from lib_ti.training.trainer import Services, train

pytestmark = pytest.mark.training


def run(tmp_path, model, messages=None, **overrides):
    values = train_values(tmp_path, **overrides)
    services = Services(message=(messages if messages is not None else []).append)
    return train(parse_config(values).config, model, str(tmp_path / "emb"), str(tmp_path / "runs"), services)


def steps_logged(run_dir):
    with open(os.path.join(run_dir, "mystyle-log.csv")) as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_training_again_with_overwrite_moves_the_earlier_run_aside(tmp_path):
    model = tiny_model()
    run(tmp_path, model, max_train_steps=6, sample_every_n_steps=3)
    run_dir = str(tmp_path / "runs" / "mystyle")
    messages = []
    run(tmp_path, model, messages, max_train_steps=2, overwrite=True)
    assert [s for s, _ in list_checkpoints(run_dir, "mystyle")] == [2]  # not 2, 4, 6 of two runs
    assert steps_logged(run_dir) == [1, 2] and not os.path.exists(os.path.join(run_dir, "samples"))
    aside = [d for d in os.listdir(tmp_path / "runs") if d.startswith("mystyle.")]
    assert len(aside) == 1 and any(aside[0] in m and "moved" in m for m in messages), messages
    old = str(tmp_path / "runs" / aside[0])
    assert [s for s, _ in list_checkpoints(old, "mystyle")] == [2, 3, 4, 6] and steps_logged(old) == list(range(1, 7))
    assert [c.label for c in pick_checkpoints(list_checkpoints(run_dir, "mystyle"), "all", 2)] == ["final"]
    assert [row["step"] for row in history(run_dir, "mystyle", read_embedding)] == [2]


def test_a_shared_output_dir_gives_up_only_this_names_files(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "other-100.safetensors").write_bytes(b"another run")
    (shared / "mystyle-v2-log.csv").write_bytes(b"another name")
    model = tiny_model()
    run(tmp_path, model, output_dir=str(shared), max_train_steps=2)
    run(tmp_path, model, output_dir=str(shared), max_train_steps=2, overwrite=True)
    assert (shared / "other-100.safetensors").read_bytes() == b"another run" and (
        shared / "mystyle-v2-log.csv"
    ).exists()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("shared.")]
    assert len(aside) == 1 and sorted(os.listdir(aside[0])) == [
        "mystyle-2.optimizer.safetensors",
        "mystyle-2.safetensors",
        "mystyle-config.json",
        "mystyle-log.csv",
        "mystyle-state.json",  # the earlier run's state goes with it; the new run writes its own
    ]
    assert steps_logged(str(shared)) == [1, 2]


def test_continuing_a_run_keeps_its_folder(tmp_path):
    model = tiny_model()
    first = run(tmp_path, model, max_train_steps=2)
    run(tmp_path, model, max_train_steps=4, weights=first.final_path, overwrite=True)
    run_dir = str(tmp_path / "runs" / "mystyle")
    assert steps_logged(run_dir) == [1, 2, 3, 4] and [s for s, _ in list_checkpoints(run_dir, "mystyle")] == [2, 4]
    assert not [d for d in os.listdir(tmp_path / "runs") if d.startswith("mystyle.")]


def test_continuing_from_an_earlier_step_does_not_mix_in_the_later_steps(tmp_path):
    model = tiny_model()
    run(tmp_path, model, max_train_steps=6)
    run_dir = str(tmp_path / "runs" / "mystyle")
    messages = []
    run(
        tmp_path,
        model,
        messages,
        max_train_steps=4,
        weights=os.path.join(run_dir, "mystyle-2.safetensors"),
        overwrite=True,
    )
    assert steps_logged(run_dir) == [1, 2, 3, 4] and [s for s, _ in list_checkpoints(run_dir, "mystyle")] == [2, 4]
    assert any("copied back" in m for m in messages), messages
    assert any("Loaded the optimizer state" in m for m in messages), messages


def test_the_config_records_the_seed_used(tmp_path):
    messages = []
    result = run(tmp_path, tiny_model(), messages, seed=-1, max_train_steps=1)
    with open(tmp_path / "runs" / "mystyle" / "mystyle-config.json") as f:
        seed = json.load(f)["seed"]
    assert seed >= 0 and any(f"seed {seed}," in m for m in messages)
    assert json.loads(load_embedding(result.final_path)[1]["ti_settings"])["seed"] == seed


def test_previews_carry_an_infotext_that_names_their_steps_checkpoint(tmp_path):
    result = run(tmp_path, tiny_model(), max_train_steps=4, save_every_n_steps=0, sample_every_n_steps=3)
    run_dir = tmp_path / "runs" / "mystyle"
    preview = run_dir / "samples" / "mystyle-000003-0.png"
    assert Image.open(preview).text["parameters"].startswith("mystyle-3\nSteps:")
    assert [s for s, _ in list_checkpoints(str(run_dir), "mystyle")] == [3, 4]  # 3 kept for the preview
    assert preview_caption(str(preview)) == "step 3" and str(preview) in result.files


def test_previews_do_not_reset_the_training_randomness(tmp_path):
    """The WebUI's txt2img seeds torch's global generator; without care every step after a preview drew the same
    noise in every run."""
    model = tiny_model()
    sample = model.sample

    def seeding_sample(prompts, seed, steps, size):
        torch.manual_seed(seed)  # as the WebUI's txt2img does
        return sample(prompts, seed, steps, size)

    model.sample = seeding_sample
    with_previews = run(tmp_path / "a", model, max_train_steps=4, sample_every_n_steps=2).losses
    without = run(tmp_path / "b", model, max_train_steps=4).losses
    assert with_previews == without
