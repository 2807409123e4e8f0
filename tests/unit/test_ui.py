"""The tab's actions (what its buttons do), without gradio: train, load and save a config."""

from __future__ import annotations

import json

import pytest

from helpers import FolderHost, make_dataset, tiny_model
from lib_ti.training.config import TrainConfig
from lib_ti.ui.form import FIELDS, config_to_values
from lib_ti.jobs.manager import JobManager
from lib_ti.ui.tab import TabActions

pytestmark = pytest.mark.training


@pytest.fixture
def actions(tmp_path):
    model = tiny_model()
    return TabActions(JobManager(), FolderHost(str(tmp_path)), lambda: model, lambda: None)


def form_values(**changes):
    config = TrainConfig(**changes)
    return config_to_values(config)


def test_train_button_trains_and_reports(actions, tmp_path):
    values = form_values(
        train_data_dir=make_dataset(str(tmp_path / "data")),
        token_string="mystyle",
        max_train_steps=2,
        sample_every_n_steps=2,
        save_every_n_steps=0,
    )
    gallery, html = actions.train(*values)
    assert len(gallery) == 1 and gallery[0][0].endswith(".png") and gallery[0][1] == "step 2"  # labelled
    assert "Done" in html and "mystyle.safetensors" in html and "1 checkpoint file(s)" in html


def test_train_button_with_bad_input_shows_the_message_and_starts_nothing(actions):
    gallery, html = actions.train(*form_values(train_data_dir="", token_string="bad token"))
    assert gallery == [] and "ti-trainer-error" in html
    assert "train_data_dir is empty" in html and "contains spaces" in html
    assert not actions.manager.jobs


def test_save_then_load_round_trips_the_form(actions, tmp_path):
    values = form_values(
        train_data_dir="/d",
        token_string="mystyle",
        init_word="oil painting",
        num_vectors_per_token=4,
        templates=["a [name] painting"],
        template_set="custom",
    )
    path = str(tmp_path / "cfg.json")
    assert "Saved" in actions.save(path, *values)
    assert json.load(open(path))["num_vectors_per_token"] == 4
    loaded = actions.load(path)
    assert loaded[: len(FIELDS)] == values and "Loaded cfg.json" in loaded[-1]


def test_load_reports_unknown_keys_and_bad_files(actions, tmp_path):
    path = tmp_path / "kohya.json"
    path.write_text(json.dumps({"token_string": "x", "train_data_dir": "/d", "mystery": 1}))
    assert "mystery" in actions.load(str(path))[-1]
    path.write_text("{not json")
    result = actions.load(str(path))
    assert result[: len(FIELDS)] == [None] * len(FIELDS) and "not valid JSON" in result[-1]
