"""The tab's form: a config goes to form values and back unchanged; stage text errors name the line."""

import dataclasses

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
