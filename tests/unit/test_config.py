"""parse_config / validate / config files: kohya aliases, translations, and one message per bad key."""

import json
import os

import pytest

from lib_ti.training.config import ParsedConfig, Stage, TrainConfig, parse_config, validate_token
from lib_ti.training.config_files import load_config_file, save_config_file
from lib_ti.errors import ConfigError, UserError

BASE = {"token_string": "mystyle", "train_data_dir": "/data/mystyle"}


def parse(**extra):
    return parse_config({**BASE, **extra})


def problems_of(data):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def bad(**extra):
    return problems_of({**BASE, **extra})


# ---------------------------------------------------------------- aliases and kohya translations


def test_minimal_config_uses_defaults():
    parsed = parse()
    assert isinstance(parsed, ParsedConfig)
    assert parsed.config == TrainConfig(token_string="mystyle", train_data_dir="/data/mystyle")
    assert parsed.unknown_keys == [] and parsed.ignored_keys == {} and parsed.notes == []
    assert parsed.messages() == []
    assert parsed.config.name == "mystyle"


def test_output_name_overrides_name():
    assert parse(output_name="mystyle_v2").config.name == "mystyle_v2"


def test_pretrained_model_alias():
    parsed = parse(pretrained_model_name_or_path="runwayml/stable-diffusion-v1-5")
    assert parsed.config.model_name_or_path == "runwayml/stable-diffusion-v1-5"
    assert parsed.unknown_keys == []


def test_caption_extention_typo_alias_and_sample_sampler_seed():
    parsed = parse(caption_extention=".caption", sample_sampler_seed=99)
    assert parsed.config.caption_extension == ".caption"
    assert parsed.config.sample_seed == 99


@pytest.mark.parametrize(
    "value, source, template_set",
    [
        ("caption", "captions", "style"),  # template_set keeps its default
        ("object template", "templates", "object"),
        ("style template", "templates", "style"),
        ("Object Template", "templates", "object"),
    ],
)
def test_template_choice(value, source, template_set):
    config = parse(template=value).config
    assert config.caption_source == source
    assert config.template_set == template_set


def test_template_choice_unknown_is_a_problem():
    problems = bad(template="poem template")
    assert len(problems) == 1
    assert problems[0].startswith("template:") and "poem template" in problems[0]


def test_lr_warmup_percent_converted_to_steps_with_note():
    parsed = parse(lr_warmup=10, max_train_steps=1500)
    assert parsed.config.lr_warmup_steps == 150
    assert any("10%" in n and "150" in n for n in parsed.notes)
    assert any("150" in m for m in parsed.messages())


def test_lr_warmup_percent_as_string():
    assert parse(lr_warmup="20", max_train_steps="1000").config.lr_warmup_steps == 200


def test_lr_warmup_steps_wins_over_percent():
    parsed = parse(lr_warmup=10, lr_warmup_steps=7, max_train_steps=1000)
    assert parsed.config.lr_warmup_steps == 7
    assert parsed.notes == []


def test_lr_warmup_zero_percent_adds_no_note():
    parsed = parse(lr_warmup=0)
    assert parsed.config.lr_warmup_steps == 0
    assert parsed.notes == []


def test_max_resolution_square():
    parsed = parse(max_resolution="512,512")
    assert parsed.config.resolution == 512
    assert parsed.notes == []


def test_max_resolution_not_square_uses_larger_side_with_note():
    parsed = parse(max_resolution="768,512")
    assert parsed.config.resolution == 768
    assert any("768" in n for n in parsed.notes)


def test_optimizer_adamw8bit_sets_use_8bit_adam():
    config = parse(optimizer="AdamW8bit").config
    assert config.optimizer == "AdamW"
    assert config.use_8bit_adam is True


def test_optimizer_adamw_plain():
    config = parse(optimizer="AdamW").config
    assert config.optimizer == "AdamW" and config.use_8bit_adam is False


def test_optimizer_unsupported_is_a_problem():
    problems = bad(optimizer="Lion")
    assert any(p.startswith("optimizer:") and "Lion" in p for p in problems)


def test_save_model_as_ckpt_becomes_pt_with_note():
    parsed = parse(save_model_as="ckpt")
    assert parsed.config.save_model_as == "pt"
    assert any("ckpt" in n and ".pt" in n for n in parsed.notes)


def test_save_model_as_safetensors_and_dotted():
    assert parse(save_model_as="safetensors").config.save_model_as == "safetensors"
    assert parse(save_model_as=".pt").config.save_model_as == "pt"


def test_save_model_as_unknown_is_a_problem():
    assert any(p.startswith("save_model_as:") for p in bad(save_model_as="diffusers"))


def test_sample_prompts_kohya_options_kept_for_sampling():
    text = (
        "a painting of a cat by [name] --n blurry, ugly --w 512 --h 512 --s 20\n"
        "# a comment line\n"
        "\n"
        "[name] landscape --d 42\n"
        "plain prompt"
    )
    config = parse(sample_prompts=text).config
    assert config.sample_prompts == [
        "a painting of a cat by [name] --n blurry, ugly --w 512 --h 512 --s 20",
        "[name] landscape --d 42",
        "plain prompt",
    ]


def test_sample_prompts_as_list():
    config = parse(sample_prompts=["one --n bad", " two "]).config
    assert config.sample_prompts == ["one --n bad", "two"]


def test_sample_prompt_double_dash_inside_word_is_kept():
    # only " --x" (an option after a space) starts kohya options
    assert parse(sample_prompts="well--made [name]").config.sample_prompts == ["well--made [name]"]


def test_unknown_keys_listed_back():
    parsed = parse(network_dim=128, foo_bar="x")
    assert parsed.unknown_keys == ["network_dim", "foo_bar"]
    messages = parsed.messages()
    assert any("network_dim" in m and "foo_bar" in m and "Unknown" in m for m in messages)


def test_ignored_keys_with_reason():
    parsed = parse(cache_latents=True, xformers="xformers", clip_skip=2)
    assert set(parsed.ignored_keys) == {"cache_latents", "xformers", "clip_skip"}
    assert "cached" in parsed.ignored_keys["cache_latents"]
    assert parsed.unknown_keys == []
    messages = parsed.messages()
    assert any("'clip_skip' has no effect here" in m and "Clip skip" in m for m in messages)
    assert len(messages) == 3


@pytest.mark.parametrize(
    "value, text",
    [
        (0.005, "0.005"),
        (1e-4, "0.0001"),
        ("5e-3", "5e-3"),
        (" 0.005:100, 1e-3:1000 ", "0.005:100, 1e-3:1000"),
    ],
)
def test_learning_rate_forms(value, text):
    assert parse(learning_rate=value).config.learning_rate == text


def test_type_coercion_from_strings():
    config = parse(
        max_train_steps="2000",
        train_batch_size=2.0,
        flip_aug="true",
        enable_bucket=1,
        noise_offset="0.05",
        gradient_checkpointing="no",
        seed="42",
    ).config
    assert config.max_train_steps == 2000 and isinstance(config.max_train_steps, int)
    assert config.train_batch_size == 2 and isinstance(config.train_batch_size, int)
    assert config.flip_aug is True and config.enable_bucket is True and config.gradient_checkpointing is False
    assert config.noise_offset == pytest.approx(0.05)
    assert config.seed == 42


def test_templates_from_multiline_string():
    config = parse(template_set="custom", templates="[name] painting\n  # skip me\n\n[filewords], by [name]  ").config
    assert config.templates == ["[name] painting", "[filewords], by [name]"]


def test_stages_parsed_and_sorted():
    config = parse(
        stages=[
            {"step": 500, "templates": ["[name] art"]},
            {"step": 200, "templates": "[name] painting\n[name] drawing"},
        ]
    ).config
    assert config.stages == [Stage(200, ["[name] painting", "[name] drawing"]), Stage(500, ["[name] art"])]


def test_kohya_ss_gui_style_config():
    data = {
        "pretrained_model_name_or_path": "runwayml/stable-diffusion-v1-5",
        "train_data_dir": "/data/img",
        "token_string": "mystyle",
        "init_word": "painting",
        "num_vectors_per_token": 8,
        "template": "style template",
        "max_resolution": "512,512",
        "learning_rate": "0.0001",
        "lr_scheduler": "cosine",
        "lr_warmup": "10",
        "max_train_steps": "1600",
        "train_batch_size": 1,
        "optimizer": "AdamW8bit",
        "save_model_as": "safetensors",
        "mixed_precision": "fp16",
        "cache_latents": True,
        "xformers": "xformers",
        "weights": "",
        "use_wandb": False,
    }
    parsed = parse_config(data)
    c = parsed.config
    assert (c.model_name_or_path, c.num_vectors_per_token, c.caption_source, c.template_set) == (
        "runwayml/stable-diffusion-v1-5",
        8,
        "templates",
        "style",
    )
    assert (c.resolution, c.learning_rate, c.lr_scheduler, c.lr_warmup_steps, c.max_train_steps) == (
        512,
        "0.0001",
        "cosine",
        160,
        1600,
    )
    assert c.use_8bit_adam and c.mixed_precision == "fp16"
    assert parsed.unknown_keys == []
    assert set(parsed.ignored_keys) == {"cache_latents", "xformers", "use_wandb"}


def test_kohya_ss_gui_blank_numbers_mean_default():
    parsed = parse(seed="", lr_scheduler_num_cycles="", lr_scheduler_power="", max_train_steps="", noise_offset="")
    default = TrainConfig()
    assert parsed.config.seed == default.seed
    assert parsed.config.max_train_steps == default.max_train_steps
    assert parsed.config.lr_scheduler_num_cycles == default.lr_scheduler_num_cycles
    assert parsed.config.lr_scheduler_power == default.lr_scheduler_power


# ---------------------------------------------------------------- validation


def test_token_empty():
    problems = problems_of({"train_data_dir": "/d"})
    assert len(problems) == 1
    assert problems[0].startswith("token_string is empty")


def test_token_with_space():
    problems = bad(token_string="my style")
    assert len(problems) == 1
    assert "token_string" in problems[0] and "spaces" in problems[0]


@pytest.mark.parametrize(
    "token, char", [("my(style", "("), ("my:style", ":"), ("<mystyle>", "<"), ("my[style]", "["), ("a,b", ",")]
)
def test_token_with_prompt_syntax_characters(token, char):
    problems = bad(token_string=token)
    assert len(problems) == 1
    assert "token_string" in problems[0] and repr(token) in problems[0]
    assert f" {char}" in problems[0] or f"{char} " in problems[0]


def test_token_too_long():
    problems = bad(token_string="x" * 65)
    assert any("longer than 64" in p for p in problems)


@pytest.mark.parametrize("token", ["mystyle", "my_style-2", "ñandú", "v1.5", "A"])
def test_validate_token_accepts(token):
    assert validate_token(token) is None


@pytest.mark.parametrize("token", ["", "a b", "a\tb", "x(y)", "a:b", "<x>", "x" * 65, "a/b"])
def test_validate_token_refuses(token):
    assert isinstance(validate_token(token), str)


def test_output_name_with_slash_refused():
    problems = bad(output_name="sub/name")
    assert len(problems) == 1 and problems[0].startswith("output_name")


def test_train_data_dir_empty():
    problems = problems_of({"token_string": "mystyle"})
    assert len(problems) == 1 and problems[0].startswith("train_data_dir")


@pytest.mark.parametrize("n", [0, 76, -1])
def test_vectors_out_of_range(n):
    problems = bad(num_vectors_per_token=n)
    assert len(problems) == 1
    assert problems[0].startswith("num_vectors_per_token:") and "1 to 75" in problems[0] and str(n) in problems[0]


@pytest.mark.parametrize("n", [1, 75])
def test_vectors_limits_accepted(n):
    assert parse(num_vectors_per_token=n).config.num_vectors_per_token == n


@pytest.mark.parametrize(
    "lr, why",
    [
        ("1.2x", "not a number"),
        (0, "positive"),
        ("-0.01", "positive"),
        ("", "empty"),
        ("0.005:100, 0.001:50", "increase"),
        ("nan", "positive"),
    ],
)
def test_learning_rate_invalid(lr, why):
    problems = bad(learning_rate=lr)
    assert len(problems) == 1
    assert problems[0].startswith("learning_rate:") and why in problems[0]


@pytest.mark.parametrize(
    "key, value",
    [("max_train_steps", 0), ("train_batch_size", -1), ("gradient_accumulation_steps", 0), ("sample_steps", 0)],
)
def test_must_be_positive(key, value):
    problems = bad(**{key: value})
    assert any(p.startswith(f"{key}:") and "positive" in p and str(value) in p for p in problems)


@pytest.mark.parametrize("key", ["save_every_n_steps", "sample_every_n_steps", "lr_warmup_steps", "resolution"])
def test_may_be_zero_not_negative(key):
    assert getattr(parse(**{key: 0}).config, key) == 0
    problems = bad(**{key: -8})
    assert len(problems) == 1 and problems[0].startswith(f"{key}:") and "-8" in problems[0]


def test_resolution_multiple_of_8():
    problems = bad(resolution=500)
    assert len(problems) == 1 and problems[0].startswith("resolution:") and "multiple of 8" in problems[0]
    assert parse(resolution=520).config.resolution == 520


def test_mixed_precision_fp8():
    problems = bad(mixed_precision="fp8")
    assert len(problems) == 1
    assert problems[0].startswith("mixed_precision:") and "'fp8'" in problems[0] and "bf16" in problems[0]


@pytest.mark.parametrize(
    "key, value", [("caption_source", "tags"), ("template_set", "poems"), ("lr_scheduler", "onecycle")]
)
def test_choices(key, value):
    problems = bad(**{key: value})
    assert any(p.startswith(f"{key}:") and repr(value) in p for p in problems)


def test_noise_offset_range():
    problems = bad(noise_offset=1.5)
    assert len(problems) == 1 and problems[0].startswith("noise_offset:")


def test_custom_template_without_name():
    problems = bad(template_set="custom", templates=["[name] painting", "a painting"])
    assert len(problems) == 1
    assert problems[0].startswith("templates:") and "'a painting'" in problems[0] and "[name]" in problems[0]


def test_custom_templates_missing():
    problems = bad(template_set="custom")
    assert any(p.startswith("templates:") and "custom" in p for p in problems)


def test_custom_templates_not_needed_for_captions_only():
    assert parse(template_set="custom", caption_source="captions").config.templates == []


def test_stage_without_name():
    problems = bad(stages=[{"step": 100, "templates": ["[name] art", "just art"]}])
    assert len(problems) == 1
    assert problems[0].startswith("stages[0]:") and "'just art'" in problems[0]


def test_stage_bad_step_and_missing_templates():
    problems = bad(stages=[{"step": 0, "templates": ["[name]"]}, {"step": 100, "templates": []}])
    assert any(p.startswith("stages[0]") and "step > 0" in p for p in problems)
    assert any(p.startswith("stages[1]") for p in problems)


def test_stage_malformed():
    problems = bad(stages=[{"templates": ["[name]"]}])
    assert len(problems) == 1 and problems[0].startswith("stages[0]")
    problems = bad(stages="300: [name]")
    assert len(problems) == 1 and problems[0].startswith("stages:")


@pytest.mark.parametrize(
    "key, value",
    [
        ("num_vectors_per_token", "abc"),
        ("max_train_steps", 12.5),
        ("train_batch_size", True),
        ("seed", "x"),
        ("flip_aug", "maybe"),
        ("noise_offset", "lots"),
        ("noise_offset", [1]),
    ],
)
def test_bad_types(key, value):
    problems = bad(**{key: value})
    assert len(problems) == 1
    assert problems[0].startswith(f"{key}:") and repr(value) in problems[0]


def test_multiple_problems_reported_together():
    problems = problems_of(
        {
            "token_string": "my style",
            "train_data_dir": "/d",
            "num_vectors_per_token": 76,
            "learning_rate": "1.2x",
            "max_train_steps": 0,
            "mixed_precision": "fp8",
        }
    )
    keys = ["token_string", "num_vectors_per_token", "learning_rate", "max_train_steps", "mixed_precision"]
    for key in keys:
        assert any(p.startswith(key) or f"{key} " in p for p in problems), key
    assert len(problems) == len(keys)


def test_multiple_type_problems_reported_together():
    problems = bad(num_vectors_per_token="abc", train_batch_size="two", flip_aug="maybe")
    assert [p.split(":")[0] for p in problems] == ["num_vectors_per_token", "train_batch_size", "flip_aug"]


def test_a_value_of_the_wrong_type_does_not_hide_the_other_problems():
    """A wrongly typed value used to stop the checks, so a user fixing it met the next problem only on a second try."""
    problems = problems_of(
        {"token_string": "my style", "train_data_dir": "", "max_train_steps": "many", "mixed_precision": "fp8"}
    )
    assert [p.split(" ")[0].rstrip(":") for p in problems] == [
        "max_train_steps",
        "token_string",
        "train_data_dir",
        "mixed_precision",
    ]
    # the wrongly typed key is named once: its default, checked in its place, adds nothing about it
    assert sum(p.startswith("max_train_steps") for p in problems) == 1


def test_config_error_message_lists_problems():
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "mixed_precision": "fp8", "train_batch_size": -1})
    assert isinstance(info.value, UserError)
    text = str(info.value)
    assert text.startswith("Invalid settings:")
    assert "- mixed_precision:" in text and "- train_batch_size:" in text


@pytest.mark.parametrize("data", [["token_string", "x"], "token_string=x", None, 5])
def test_non_dict_config(data):
    problems = problems_of(data)
    assert len(problems) == 1 and "JSON object" in problems[0]


# ---------------------------------------------------------------- files


def test_load_config_file_missing(tmp_path):
    path = str(tmp_path / "nope.json")
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert "nope.json" in str(info.value) and "does not exist" in str(info.value)


def test_load_config_file_invalid_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"token_string": "x",,}', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config_file(str(path))
    assert "broken.json" in str(info.value) and "not valid JSON" in str(info.value)


def test_load_config_file_not_utf8(tmp_path):
    path = tmp_path / "binary.json"
    path.write_bytes(b'{"token_string": "\xff\xfe\xfa"}')
    with pytest.raises(ConfigError) as info:
        load_config_file(str(path))
    assert "binary.json" in str(info.value)


def test_load_config_file_with_bom(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(BASE).encode("utf-8"))
    assert load_config_file(str(path)).config.token_string == "mystyle"


def test_load_config_file_validates(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**BASE, "num_vectors_per_token": 0}), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config_file(str(path))
    assert info.value.problems[0].startswith("num_vectors_per_token")


def test_save_then_load_round_trip(tmp_path):
    config = TrainConfig(
        train_data_dir="/data/ñandú imgs",
        token_string="ñandú",
        init_word="bird",
        num_vectors_per_token=4,
        output_name="nandu_v1",
        output_dir="/runs/nandu",
        model_name_or_path="sd15.safetensors",
        learning_rate="0.005:100, 1e-3:1000, 1e-5",
        lr_scheduler="cosine_with_restarts",
        lr_warmup_steps=20,
        lr_scheduler_num_cycles=3,
        lr_scheduler_power=2.0,
        use_8bit_adam=True,
        train_batch_size=2,
        gradient_accumulation_steps=3,
        max_train_steps=1500,
        save_every_n_steps=250,
        mixed_precision="bf16",
        gradient_checkpointing=True,
        seed=1234,
        resolution=512,
        flip_aug=True,
        enable_bucket=True,
        caption_source="templates",
        caption_extension=".caption",
        template_set="custom",
        templates=["[name] bird", "[filewords], a photo of [name]"],
        stages=[Stage(300, ["[name] painting", "[name] art"]), Stage(900, ["[name]"])],
        noise_offset=0.05,
        sample_every_n_steps=100,
        sample_prompts=["a [name] on a branch", "[name]"],
        sample_seed=7,
        sample_steps=25,
        save_model_as="pt",
        weights="/emb/old.pt",
        overwrite=True,
    )
    path = tmp_path / "sub" / "cfg.json"
    save_config_file(config, str(path))
    assert path.is_file()
    assert json.loads(path.read_text(encoding="utf-8"))["stages"][0] == {
        "step": 300,
        "templates": ["[name] painting", "[name] art"],
    }
    parsed = load_config_file(str(path))
    assert parsed.config == config
    assert parsed.unknown_keys == [] and parsed.ignored_keys == {} and parsed.notes == []
    assert [f for f in os.listdir(path.parent)] == ["cfg.json"]  # no temp file left


def test_save_then_load_round_trip_defaults(tmp_path):
    config = parse().config
    path = tmp_path / "cfg.json"
    save_config_file(config, str(path))
    assert load_config_file(str(path)).config == config
