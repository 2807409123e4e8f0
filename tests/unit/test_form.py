"""The tab's form: a config goes to form values and back unchanged; stage text errors name the line."""

import dataclasses
import os

import pytest

from lib_ti.training.config import Stage, TrainConfig, parse_config
from lib_ti.errors import ConfigError
from lib_ti.ui.form import FIELDS, config_to_values, stages_from_text, stages_to_text, values_to_dict


def full_config(**kw):
    values = dict(
        train_data_dir="/data/imgs",
        token_string="mystyle",
        init_word="oil painting",
        num_vectors_per_token=6,
        output_name="mystyle_v3",
        output_dir="/runs/x",
        model_name_or_path="sd15",
        learning_rate="0.005:100, 1e-3",
        lr_scheduler="cosine",
        lr_warmup_steps=25,
        use_8bit_adam=True,
        train_batch_size=2,
        gradient_accumulation_steps=4,
        max_train_steps=800,
        save_every_n_steps=200,
        mixed_precision="fp16",
        gradient_checkpointing=True,
        seed=99,
        resolution=512,
        flip_aug=True,
        enable_bucket=True,
        caption_source="both",
        caption_extension=".caption",
        template_set="custom",
        templates=["[name] painting", "[filewords], art by [name]"],
        stages=[Stage(200, ["[name] sketch", "a [name] drawing"]), Stage(600, ["[name]"])],
        noise_offset=0.1,
        sample_every_n_steps=100,
        sample_prompts=["a cat by [name]", "[name] landscape"],
        sample_seed=5,
        sample_steps=30,
        save_model_as="pt",
        weights="/emb/old.safetensors",
        overwrite=True,
    )
    values.update(kw)
    return TrainConfig(**values)


def round_trip(config):
    return parse_config(values_to_dict(config_to_values(config))).config


def test_fields_are_config_keys_without_duplicates():
    keys = [f.key for f in FIELDS]
    assert len(keys) == len(set(keys))
    assert set(keys) <= {f.name for f in dataclasses.fields(TrainConfig)}


def test_round_trip_full_config():
    config = full_config()
    assert round_trip(config) == config


def test_round_trip_defaults():
    config = TrainConfig(token_string="tok", train_data_dir="/d")
    assert round_trip(config) == config


def test_values_are_in_fields_order():
    config = full_config()
    values = config_to_values(config)
    assert len(values) == len(FIELDS)
    by_key = dict(zip([f.key for f in FIELDS], values))
    assert by_key["templates"] == "[name] painting\n[filewords], art by [name]"
    assert by_key["stages"] == "200: [name] sketch | a [name] drawing\n600: [name]"
    assert by_key["sample_prompts"] == "a cat by [name]\n[name] landscape"
    assert by_key["num_vectors_per_token"] == 6


def test_gradio_number_floats_become_ints():
    values = config_to_values(full_config())
    keys = [f.key for f in FIELDS]
    for key in ("num_vectors_per_token", "max_train_steps", "seed", "train_batch_size"):
        values[keys.index(key)] = float(values[keys.index(key)])
    data = values_to_dict(values)
    assert data["max_train_steps"] == 800 and isinstance(data["max_train_steps"], int)
    assert data["num_vectors_per_token"] == 6 and isinstance(data["num_vectors_per_token"], int)
    assert parse_config(data).config == full_config()


def test_empty_lines_and_stages_fields():
    values = config_to_values(TrainConfig(token_string="tok", train_data_dir="/d"))
    keys = [f.key for f in FIELDS]
    values[keys.index("templates")] = None
    values[keys.index("stages")] = None
    data = values_to_dict(values)
    assert data["templates"] == "" and data["stages"] == []


def test_round_trip_keeps_scheduler_cycles_and_power():
    config = full_config(lr_scheduler="cosine_with_restarts", lr_scheduler_num_cycles=3, lr_scheduler_power=2.0)
    assert round_trip(config) == config


# ---------------------------------------------------------------- stages text


def test_stages_text_round_trip():
    stages = [Stage(100, ["[name] a", "[name] b"]), Stage(250, ["x [name]"])]
    text = stages_to_text(stages)
    assert text == "100: [name] a | [name] b\n250: x [name]"
    assert stages_from_text(text) == [
        {"step": 100, "templates": ["[name] a", "[name] b"]},
        {"step": 250, "templates": ["x [name]"]},
    ]


def test_stages_from_text_tolerates_spacing_and_blank_lines():
    text = "\n  300 :  [name] painting |  | [name] art  \n\n"
    assert stages_from_text(text) == [{"step": 300, "templates": ["[name] painting", "[name] art"]}]
    assert stages_from_text("") == [] and stages_from_text(None) == []


@pytest.mark.parametrize(
    "text, number, bad_line",
    [
        ("oops", 1, "oops"),
        ("100: [name]\nstep 200: [name] art", 2, "step 200: [name] art"),
        ("100: [name]\n\n-5: [name]", 3, "-5: [name]"),
        ("100:", 1, "100:"),
        ("[name] art", 1, "[name] art"),
    ],
)
def test_stages_from_text_errors_name_the_line(text, number, bad_line):
    with pytest.raises(ConfigError) as info:
        stages_from_text(text)
    (problem,) = info.value.problems
    assert f"stages line {number}:" in problem
    assert repr(bad_line) in problem
    assert "STEP: template | template" in problem


def test_bad_stage_template_found_after_the_form():
    values = config_to_values(TrainConfig(token_string="tok", train_data_dir="/d"))
    values[[f.key for f in FIELDS].index("stages")] = "100: [name] art | no token here"
    with pytest.raises(ConfigError) as info:
        parse_config(values_to_dict(values))
    assert any(p.startswith("stages[0]") and "no token here" in p for p in info.value.problems)


# ---------------------------------------------------------------- layout logic


def test_fields_only_shown_for_the_choices_that_use_them():
    from lib_ti.ui.form import visibility

    base = config_to_values(TrainConfig(token_string="tok", train_data_dir="/d"))
    values = dict(zip([f.key for f in FIELDS], base))
    shown = visibility(values)
    assert not shown["lr_scheduler_num_cycles"] and not shown["lr_scheduler_power"]
    assert not shown["templates"] and shown["template_set"] and not shown["early_stopping_min_delta"]
    assert shown["sample_prompts"]  # previews are on by default
    values.update(lr_scheduler="polynomial", template_set="custom", sample_every_n_steps=0)
    shown = visibility(values)
    assert shown["lr_scheduler_power"] and shown["templates"] and not shown["sample_prompts"]
    assert not shown["huber_c"] and not shown["multires_noise_discount"]
    values.update(loss_type="huber", multires_noise_iterations=6)
    assert visibility(values)["huber_c"] and visibility(values)["multires_noise_discount"]
    values.update(caption_source="captions")
    assert not visibility(values)["templates"] and not visibility(values)["template_set"]


def test_every_field_is_in_a_group_and_the_essentials_come_first():
    from lib_ti.ui.form import GROUPS

    assert {f.group for f in FIELDS} <= {"", *GROUPS}
    assert [f.key for f in FIELDS if f.group == ""] == [
        "token_string",
        "init_word",
        "num_vectors_per_token",
        "train_data_dir",
    ]


def test_messages_use_the_tabs_labels():
    from lib_ti.ui.form import with_labels

    assert with_labels("token_string is empty: it is the word") == "Token is empty: it is the word"
    assert with_labels("train_data_dir '/x' is not a folder.") == "Dataset directory '/x' is not a folder."
    assert with_labels("seed: expected a whole number") == "Seed: expected a whole number"
    assert with_labels("num_vectors_per_token: must be 1 to 75").startswith("Vectors per token: must")
    # ordinary words are left alone; a key quoted from the user's own file stays as written
    assert with_labels("the model's weights are frozen") == "the model's weights are frozen"
    assert with_labels("'cache_latents' has no effect here") == "'cache_latents' has no effect here"


def test_paths_expand_the_home_folder():
    config = parse_config({"token_string": "t", "train_data_dir": "~/imgs", "output_dir": "~/runs"}).config
    assert config.train_data_dir == os.path.expanduser("~/imgs") and not config.output_dir.startswith("~")


def test_previews_and_checkpoints_are_on_by_default():
    config = TrainConfig()
    assert config.sample_every_n_steps > 0 and config.save_every_n_steps > 0
