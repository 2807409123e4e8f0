"""The tab's actions (what its buttons do), without gradio: train, load and save a config."""

from __future__ import annotations

import html
import json
import os

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
    assert "Done" in html and "mystyle.safetensors" in html and "1 checkpoint(s)" in html
    assert "Run folder" in html and str(tmp_path / "runs" / "mystyle") in html  # shown plainly, not folded
    assert "<svg" in html  # the run's own loss curve, in its result


def test_the_result_says_each_thing_once(actions, tmp_path):
    """The checks before the job and the trainer both read the dataset: the result says its length once."""
    data = make_dataset(str(tmp_path / "data"))
    os.makedirs(os.path.join(data, "notes"))  # a subfolder without '<repeats>_': a dataset note
    values = form_values(train_data_dir=data, token_string="mystyle", max_train_steps=2, sample_every_n_steps=0)
    _, html = actions.train(*values)
    assert "Done" in html and html.count("Length: ") == 1
    messages = actions.manager.current().messages
    assert len(messages) == len(set(messages)), messages


def test_train_button_with_bad_input_shows_the_message_and_starts_nothing(actions):
    gallery, html = actions.train(*form_values(train_data_dir="", token_string="bad token"))
    assert gallery == [] and "ti-trainer-error" in html
    # the tab's labels, not the config keys
    assert "Dataset directory is empty" in html and "Token &#x27;bad token&#x27; contains spaces" in html
    assert "train_data_dir" not in html and "token_string" not in html
    assert not actions.manager.jobs


def test_every_problem_is_reported_at_once_folder_included(actions, tmp_path):
    _, html = actions.train(*form_values(train_data_dir=str(tmp_path / "missing"), token_string="bad token"))
    assert "contains spaces" in html and "is not a folder" in html


def test_train_refuses_while_another_job_runs_and_says_which(actions, tmp_path):
    from lib_ti.training.config import TrainConfig as Config

    job = actions.manager.create(Config(token_string="queued_tok", train_data_dir="/d", max_train_steps=50))
    job.state, job.step = "running", 7
    message = actions.busy()
    assert "queued_tok" in message and "step 7/50" in message and "Not started" in message
    job.state = "done"
    assert actions.busy() == ""


def test_a_refused_press_ends_its_progress_bar_at_once(actions):
    """The press's task never reaches the GPU queue: it is marked finished, so the WebUI's bar ends."""
    finished = []
    actions.finish_task = finished.append
    assert actions.refused("task(idle)") == "" and finished == []  # it goes on to train: the queue finishes it
    job = actions.manager.create(TrainConfig(token_string="busy_tok", train_data_dir="/d", max_train_steps=5))
    job.state = "running"
    assert "busy_tok" in actions.refused("task(abc)") and finished == ["task(abc)"]


def test_save_asks_before_overwriting_an_existing_file(actions, tmp_path):
    path = tmp_path / "loaded.json"
    path.write_text("{}")
    values = form_values(train_data_dir="/d", token_string="mystyle")
    message, pending = actions.save(str(path), "", "TI Trainer JSON", *values)
    assert "exists" in message and pending == str(path) and path.read_text() == "{}"
    message, pending = actions.save(str(path), pending, "TI Trainer JSON", *values)  # the second press overwrites
    assert "Saved" in message and pending == "" and json.loads(path.read_text())["token_string"] == "mystyle"


def test_load_shows_the_notes_for_this_machine_and_an_ordinary_word_token(actions, tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(
        json.dumps(
            {"token_string": "mystyle", "train_data_dir": "~/d", "mixed_precision": "fp16", "use_8bit_adam": True}
        )
    )
    loaded = actions.load(str(path))
    message = loaded[-1]
    assert "runs on the CPU" in message and "Mixed precision fp16 applies on CUDA only" in message
    assert "8-bit AdamW needs a CUDA GPU" in message
    assert loaded[[f.key for f in FIELDS].index("train_data_dir")] == os.path.expanduser("~/d")  # ~ expanded


def test_ordinary_word_note():
    from lib_ti.jobs.manager import ordinary_word_note

    assert "ordinary word" in ordinary_word_note("dog", [1929])
    assert ordinary_word_note("mystyle", [1001, 2002]) == ""


def test_use_a_checkpoint_as_the_embedding(actions, tmp_path):
    reloaded = []
    actions.reload_embeddings = lambda: reloaded.append(True)
    checkpoint = tmp_path / "runs" / "x-100.safetensors"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"vectors")
    message = actions.use_checkpoint(str(checkpoint), "x_best", False)
    target = tmp_path / "embeddings" / "x_best.safetensors"
    assert "Copied" in message and target.read_bytes() == b"vectors" and reloaded == [True]
    checkpoint.write_bytes(b"other")
    message = actions.use_checkpoint(str(checkpoint), "x_best", False)  # never overwrites without asking
    assert "already exists" in message and target.read_bytes() == b"vectors"
    assert "Copied" in actions.use_checkpoint(str(checkpoint), "x_best", True) and target.read_bytes() == b"other"
    assert "contains spaces" in actions.use_checkpoint(str(checkpoint), "x best", True)
    assert not [n for n in os.listdir(target.parent) if n.endswith(".tmp")]


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
    assert "Saved" in actions.save(path, "", "TI Trainer JSON", *values)[0]
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


def test_save_as_kohya_gui_json_names_what_it_cannot_take(actions, tmp_path):
    model_file = tmp_path / "tiny-test.safetensors"
    model_file.write_bytes(b"x")
    actions.checkpoint_path = lambda name: str(model_file) if name == "tiny-test" else ""
    gui = "kohya_ss GUI JSON (its Textual Inversion tab)"
    values = form_values(train_data_dir="/d", token_string="mystyle", early_stopping_patience=30, seed=5)
    message, _ = actions.save(str(tmp_path), "", gui, *values)  # a folder: <name>.json in it
    data = json.loads((tmp_path / "mystyle.json").read_text())
    assert "Saved" in message and "for the kohya_ss GUI" in message and "early_stopping_patience 30" in message
    assert data["pretrained_model_name_or_path"] == str(model_file) and data["max_resolution"] == "64,64"
    assert data["seed"] == 5 and data["template"] == "style template" and data["sdxl"] is False
    loaded = actions.load(str(tmp_path / "mystyle.json"))  # and the tab reads it back
    assert loaded[[f.key for f in FIELDS].index("seed")] == 5 and "Loaded mystyle.json" in loaded[-1]
    other = form_values(train_data_dir="/d", token_string="mystyle", model_name_or_path="elsewhere [123]")
    message = html.unescape(actions.save(str(tmp_path / "other.json"), "", gui, *other)[0])
    assert "'elsewhere [123]' is not a file this WebUI knows" in message and "No model type known" in message
    message, _ = actions.save(str(tmp_path / "x.toml"), "", gui, *values)
    assert "needs a file name ending in .json" in message and not (tmp_path / "x.toml").exists()
    message, _ = actions.save(str(tmp_path / "y.toml"), "", "TI Trainer JSON", *values)  # a .toml name: TOML
    assert "for sd-scripts" in message and 'token_string = "mystyle"' in (tmp_path / "y.toml").read_text()
