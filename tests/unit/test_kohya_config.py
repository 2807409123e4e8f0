"""kohya_ss GUI JSON and sd-scripts TOML configs: every key read or explained, length rules, TOML written back."""

from __future__ import annotations

import tomllib

import pytest

from lib_ti.errors import ConfigError
from lib_ti.training.config import TrainConfig, parse_config
from lib_ti.training.config_files import load_config_file, save_config_file
from lib_ti.training.kohya import IGNORED, sample_prompt_options
from lib_ti.training.kohya_toml import dump_toml, kohya_args, read_config_file

# Every key the kohya_ss GUI's Textual Inversion tab saves (its SD1 and SDXL test configs, 2026-07).
GUI_TI_KEYS = """adaptive_noise_scale additional_parameters async_upload bucket_no_upscale bucket_reso_steps
cache_latents cache_latents_to_disk caption_dropout_every_n_epochs caption_dropout_rate caption_extension clip_skip
color_aug dataset_config dynamo_backend dynamo_mode dynamo_use_dynamic dynamo_use_fullgraph enable_bucket epoch
extra_accelerate_launch_args flip_aug full_fp16 gpu_ids gradient_accumulation_steps gradient_checkpointing huber_c
huber_scale huber_schedule huggingface_path_in_repo huggingface_repo_id huggingface_repo_type
huggingface_repo_visibility huggingface_token init_word ip_noise_gamma ip_noise_gamma_random_strength keep_tokens
learning_rate log_config log_tracker_config log_tracker_name log_with logging_dir loss_type lr_scheduler
lr_scheduler_args lr_scheduler_num_cycles lr_scheduler_power lr_scheduler_type lr_warmup lr_warmup_steps
main_process_port max_bucket_reso max_data_loader_n_workers max_resolution max_timestep max_token_length
max_train_epochs max_train_steps mem_eff_attn metadata_author metadata_description metadata_license metadata_tags
metadata_title min_bucket_reso min_snr_gamma min_timestep mixed_precision model_list multi_gpu
multires_noise_discount multires_noise_iterations no_token_padding noise_offset noise_offset_random_strength
noise_offset_type num_cpu_threads_per_process num_machines num_processes num_vectors_per_token optimizer
optimizer_args output_dir output_name persistent_data_loader_workers pretrained_model_name_or_path
prior_loss_weight random_crop reg_data_dir resume resume_from_huggingface sample_every_n_epochs
sample_every_n_steps sample_prompts sample_sampler save_as_bool save_every_n_epochs save_every_n_steps
save_last_n_epochs save_last_n_epochs_state save_last_n_steps save_last_n_steps_state save_model_as save_precision
save_state save_state_on_train_end save_state_to_huggingface scale_v_pred_loss_like_noise_pred sdxl
sdxl_no_half_vae seed shuffle_caption skip_cache_check stop_text_encoder_training template token_string
train_batch_size train_data_dir use_wandb v2 v_parameterization v_pred_like_loss vae vae_batch_size wandb_api_key
wandb_run_name weights xformers""".split()


def gui_config(**overrides):
    """A kohya_ss GUI TI config as it saves one (values like its SD1 test config)."""
    data = {
        "token_string": "zxc", "init_word": "*", "num_vectors_per_token": 8, "template": "style template",
        "train_data_dir": "./test/img", "dataset_config": "", "epoch": 8, "max_train_epochs": "",
        "max_train_steps": "", "train_batch_size": 4, "gradient_accumulation_steps": 1, "learning_rate": 0.0001,
        "lr_scheduler": "cosine", "lr_warmup": 0, "lr_scheduler_num_cycles": "", "lr_scheduler_power": "",
        "max_resolution": "512,512", "enable_bucket": True, "bucket_no_upscale": True, "bucket_reso_steps": 64,
        "min_bucket_reso": 256, "max_bucket_reso": 2048, "caption_extension": "", "caption_dropout_rate": 0.05,
        "caption_dropout_every_n_epochs": 0.0, "keep_tokens": "0", "shuffle_caption": False, "seed": "1234",
        "noise_offset_type": "Original", "noise_offset": 0.05, "adaptive_noise_scale": 0.005,
        "multires_noise_iterations": 8, "multires_noise_discount": 0.2, "ip_noise_gamma": 0.1,
        "ip_noise_gamma_random_strength": True, "min_snr_gamma": 10, "min_timestep": 0, "max_timestep": 1000,
        "loss_type": "l2", "huber_c": 0.1, "huber_schedule": "snr", "save_every_n_epochs": 1,
        "save_every_n_steps": 0, "sample_every_n_epochs": 0, "sample_every_n_steps": 20,
        "sample_prompts": "a painting of man wearing a gas mask , by darius kawasaki", "optimizer": "AdamW8bit",
        "mixed_precision": "bf16", "save_model_as": "safetensors", "v_pred_like_loss": 0,
        "scale_v_pred_loss_like_noise_pred": False, "sdxl": False,
    }  # fmt: skip
    data.update(overrides)
    return data


def test_every_gui_ti_key_is_read_or_explained():
    known = set(TrainConfig.__dataclass_fields__)
    special = {"template", "max_resolution", "optimizer", "pretrained_model_name_or_path", "lr_warmup"}
    unexplained = [k for k in GUI_TI_KEYS if k not in known | special | set(IGNORED)]
    assert unexplained == []


def test_gui_epochs_with_empty_steps():
    parsed = parse_config(gui_config())
    c = parsed.config
    assert (c.max_train_steps, c.epoch, c.max_train_epochs) == (0, 8, 0)
    assert (c.caption_extension, c.seed, c.lr_scheduler_num_cycles) == (".caption", 1234, 8)
    assert (c.resolution, c.min_snr_gamma, c.ip_noise_gamma, c.caption_dropout_rate) == (512, 10, 0.1, 0.05)
    assert c.use_8bit_adam and c.caption_source == "templates" and c.template_set == "style"


def test_gui_max_train_epochs_wins_and_steps_given_make_epoch_moot():
    assert parse_config(gui_config(max_train_epochs=3)).config.max_train_epochs == 3
    parsed = parse_config(gui_config(max_train_steps="80"))
    assert parsed.config.max_train_steps == 80
    assert any("'epoch' has no effect" in m for m in parsed.messages())


def test_gui_with_dataset_config_and_no_steps_trains_sd_scripts_default():
    parsed = parse_config(gui_config(dataset_config="/data/d.toml", train_data_dir=""))
    assert parsed.config.max_train_steps == 1600
    assert any("1600" in m for m in parsed.messages())


def test_gui_seed_zero_is_random_and_max_steps_zero_without_epochs_is_refused():
    assert parse_config(gui_config(seed=0)).config.seed == -1
    with pytest.raises(ConfigError, match="max_train_steps"):
        parse_config({"token_string": "a", "train_data_dir": "/x", "max_train_steps": 0})


def test_warmup_percent_waits_for_the_counted_steps():
    c = parse_config(gui_config(lr_warmup=10)).config
    assert (c.lr_warmup, c.lr_warmup_steps) == (10, 0)
    c = parse_config(gui_config(lr_warmup=10, max_train_steps=1000)).config
    assert (c.lr_warmup, c.lr_warmup_steps) == (0, 100)


def test_kohya_option_values_are_checked():
    for bad in ({"loss_type": "l3"}, {"huber_schedule": "x"}, {"caption_dropout_rate": 2}, {"min_timestep": 1000}):
        with pytest.raises(ConfigError):
            parse_config(gui_config(**bad))


def test_sd_scripts_config_file_sections_flattened_and_defaults(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(
        '[model_arguments]\npretrained_model_name_or_path = "sd15.safetensors"\n'
        '[dataset_arguments]\ntrain_data_dir = "/data/img"\nresolution = "512,768"\n'
        '[training_arguments]\ntoken_string = "zxc"\ninit_word = "cat"\noptimizer_type = "AdamW8bit"\n'
        "use_object_template = true\n",
        encoding="utf-8",
    )
    parsed = load_config_file(str(path))
    c = parsed.config
    assert (c.model_name_or_path, c.train_data_dir, c.token_string, c.resolution) == (
        "sd15.safetensors", "/data/img", "zxc", 768,
    )  # fmt: skip
    assert c.use_8bit_adam and c.template_set == "object" and c.caption_source == "templates"
    assert c.max_train_steps == 1600  # sd-scripts' default
    assert read_config_file(str(path))["token_string"] == "zxc"


def test_sample_prompts_file_is_read(tmp_path):
    prompts = tmp_path / "prompt.txt"
    prompts.write_text("# comment\nzxc in a forest --n blurry --w 640\n\nzxc portrait\n", encoding="utf-8")
    c = parse_config(gui_config(sample_prompts=str(prompts))).config
    assert c.sample_prompts == ["zxc in a forest --n blurry --w 640", "zxc portrait"]


def test_sample_prompt_options_as_sd_scripts_reads_them():
    o = sample_prompt_options("a cat --n ugly, blurry --w 640 --h 384 --d 42 --s 2000 --l 5.5 --ss euler")
    assert o["prompt"] == "a cat" and o["negative_prompt"] == "ugly, blurry"
    assert (o["width"], o["height"], o["seed"], o["steps"], o["cfg_scale"]) == (640, 384, 42, 1000, 5.5)
    assert o["ignored"] == ["--ss euler"]


def test_toml_writer_round_trips():
    data = {"a": 'x "quoted" \\ back\nline', "b": 3, "c": 0.25, "d": True, "e": [1, 2], "f": ["p", "q"]}
    assert tomllib.loads(dump_toml(data)) == data


def test_saved_toml_is_a_config_sd_scripts_reads_and_we_read_back(tmp_path):
    c = parse_config(gui_config(max_train_epochs=4, sample_prompts="zxc [name] --n bad", lr_warmup=10)).config
    notes = save_config_file(c, str(tmp_path / "run.toml"))
    data = tomllib.loads((tmp_path / "run.toml").read_text(encoding="utf-8"))
    assert (
        data["max_train_epochs"] == 4 and data["use_style_template"] is True and data["optimizer_type"] == "AdamW8bit"
    )
    assert (
        data["resolution"] == "512,512" and data["caption_extension"] == ".caption" and data["lr_warmup_steps"] == 0.1
    )
    assert (tmp_path / "run-prompts.txt").read_text(encoding="utf-8") == "zxc zxc --n bad\n"
    assert any("template" in n for n in notes)
    back = load_config_file(str(tmp_path / "run.toml")).config
    for key in ("max_train_epochs", "token_string", "num_vectors_per_token", "min_snr_gamma", "lr_warmup"):
        assert getattr(back, key) == getattr(c, key), key


def test_kohya_args_leave_out_what_kohya_cannot_take():
    c = parse_config({"token_string": "a", "train_data_dir": "/x", "learning_rate": "0.005:100, 1e-3"}).config
    args, notes = kohya_args(c)
    assert args["learning_rate"] == 0.005 and any("schedule" in n for n in notes)
    assert "resolution" not in args and any("resolution 0" in n for n in notes)


def test_the_tabs_own_form_is_not_read_as_a_gui_file():
    from lib_ti.ui.form import config_to_values, values_to_dict

    form = values_to_dict(config_to_values(TrainConfig(token_string="a", train_data_dir="/x", seed=0)))
    parsed = parse_config(form)
    assert (parsed.config.seed, parsed.config.max_train_steps, parsed.config.epoch) == (0, 1000, 0)
    form.update(max_train_steps=0, epoch=3)
    assert parse_config(form).config.max_train_steps == 0  # counted from the 3 epochs, as the GUI does


def test_epoch_without_steps_in_a_plain_json_counts_epochs():
    c = parse_config({"token_string": "a", "train_data_dir": "/x", "epoch": 4}).config
    assert (c.max_train_steps, c.epoch) == (0, 4)


def test_gui_false_in_a_number_box_is_off():
    c = parse_config(gui_config(min_timestep=False, max_train_steps=False, epoch=2)).config  # as in its SDXL file
    assert (c.min_timestep, c.max_train_steps, c.epoch) == (0, 0, 2)
