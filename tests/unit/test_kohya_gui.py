"""The kohya_ss GUI's TI JSON written from our configs: its keys and value types, the same training when read back,
and every setting it cannot take named in the notes."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from helpers import make_dataset
from lib_ti.training.config import TrainConfig, parse_config
from lib_ti.training.config_files import load_config_file, save_config_file
from lib_ti.training.kohya import sample_requests
from lib_ti.training.kohya_gui import TRANSLATED, UNMAPPED, ModelInfo, gui_values
from lib_ti.training.preview import preview_dataset
from test_kohya_config import gui_config

# The kohya_ss GUI's TI test config test/config/TI-AdamW8bit-SDXL.json (v25.0.0, gradio 5): each key's JSON type.
GUI_SDXL_TYPES = {
    "number": """adaptive_noise_scale bucket_reso_steps caption_dropout_every_n_epochs clip_skip epoch
        gradient_accumulation_steps keep_tokens lr_scheduler_num_cycles lr_scheduler_power lr_warmup main_process_port
        max_bucket_reso max_data_loader_n_workers max_timestep max_token_length max_train_epochs max_train_steps
        min_bucket_reso min_snr_gamma multires_noise_iterations num_cpu_threads_per_process num_machines num_processes
        num_vectors_per_token prior_loss_weight sample_every_n_epochs sample_every_n_steps save_every_n_epochs
        save_every_n_steps save_last_n_steps save_last_n_steps_state seed stop_text_encoder_training train_batch_size
        v_pred_like_loss vae_batch_size caption_dropout_rate huber_c ip_noise_gamma learning_rate
        multires_noise_discount noise_offset""",
    "str": """additional_parameters caption_extension dataset_config dynamo_backend dynamo_mode
        extra_accelerate_launch_args gpu_ids huber_schedule huggingface_path_in_repo huggingface_repo_id
        huggingface_repo_type huggingface_repo_visibility huggingface_token init_word log_tracker_config
        log_tracker_name log_with logging_dir loss_type lr_scheduler lr_scheduler_args lr_scheduler_type max_resolution
        metadata_author metadata_description metadata_license metadata_tags metadata_title mixed_precision model_list
        noise_offset_type optimizer optimizer_args output_dir output_name pretrained_model_name_or_path reg_data_dir
        resume resume_from_huggingface sample_prompts sample_sampler save_model_as save_precision template
        token_string train_data_dir vae wandb_api_key wandb_run_name weights xformers""",
    "bool": """async_upload bucket_no_upscale cache_latents cache_latents_to_disk color_aug dynamo_use_dynamic
        dynamo_use_fullgraph enable_bucket flip_aug full_fp16 gradient_checkpointing ip_noise_gamma_random_strength
        log_config mem_eff_attn multi_gpu no_token_padding noise_offset_random_strength persistent_data_loader_workers
        random_crop save_as_bool save_state save_state_on_train_end save_state_to_huggingface
        scale_v_pred_loss_like_noise_pred sdxl sdxl_no_half_vae shuffle_caption v2 v_parameterization""",
}
# Saved by today's save_configuration but not in that file (added since); min_timestep is saved as 0, as in the GUI's
# SD1 test config (the SDXL one has false there: a slider the user had cleared).
GUI_NEWER = {"number": "huber_scale lr_warmup_steps save_last_n_epochs save_last_n_epochs_state min_timestep",
             "bool": "disable_mmap_load_safetensors skip_cache_check"}  # fmt: skip
# Keys of the GUI's older SD1 test config TI-AdamW8bit.json that it no longer saves.
GUI_DROPPED = {"use_wandb"}
SD1_KEYS = """adaptive_noise_scale additional_parameters bucket_no_upscale bucket_reso_steps cache_latents
cache_latents_to_disk caption_dropout_every_n_epochs caption_dropout_rate caption_extension clip_skip color_aug
dataset_config enable_bucket epoch flip_aug full_fp16 gpu_ids gradient_accumulation_steps gradient_checkpointing
init_word ip_noise_gamma ip_noise_gamma_random_strength keep_tokens learning_rate log_tracker_config log_tracker_name
logging_dir lr_scheduler lr_scheduler_args lr_scheduler_num_cycles lr_scheduler_power lr_warmup max_bucket_reso
max_data_loader_n_workers max_resolution max_timestep max_token_length max_train_epochs max_train_steps
mem_eff_attn min_bucket_reso min_snr_gamma min_timestep mixed_precision model_list multi_gpu multires_noise_discount
multires_noise_iterations no_token_padding noise_offset noise_offset_random_strength noise_offset_type
num_cpu_threads_per_process num_machines num_processes num_vectors_per_token optimizer optimizer_args output_dir
output_name persistent_data_loader_workers pretrained_model_name_or_path prior_loss_weight random_crop reg_data_dir
resume sample_every_n_epochs sample_every_n_steps sample_prompts sample_sampler save_every_n_epochs
save_every_n_steps save_last_n_steps save_last_n_steps_state save_model_as save_precision save_state
scale_v_pred_loss_like_noise_pred sdxl sdxl_no_half_vae seed shuffle_caption stop_text_encoder_training template
token_string train_batch_size train_data_dir use_wandb v2 v_parameterization v_pred_like_loss vae vae_batch_size
wandb_api_key wandb_run_name weights xformers""".split()


def expected_types() -> dict[str, str]:
    return {key: kind for table in (GUI_SDXL_TYPES, GUI_NEWER) for kind, keys in table.items() for key in keys.split()}


def written(config: TrainConfig, model: ModelInfo | None = None) -> tuple[dict, list[str]]:
    """Through the file: what the GUI would load."""
    values, notes = gui_values(config, model)
    return json.loads(json.dumps(values)), notes


def read_back(tmp_path, config: TrainConfig, model: ModelInfo | None = None) -> tuple[TrainConfig, list[str]]:
    path = str(tmp_path / "gui.json")
    notes = save_config_file(config, path, "kohya_gui", model)
    return load_config_file(path).config, notes


def effective(config: TrainConfig, native: int) -> dict:
    """What training does with a config: fields that have no effect in it are left out."""
    data = config.to_dict()
    data["output_name"], data["resolution"] = config.name, config.resolution or native
    data["learning_rate"] = float(config.learning_rate)  # "2e-3" and 0.002 are one rate
    if config.max_train_steps or config.max_train_epochs:
        data.pop("epoch")  # the length comes from the others
    if config.caption_source == "captions":
        data.pop("template_set")
    lines = [p.replace("[name]", config.token_string) for p in config.sample_prompts] or [config.token_string]
    prompts, options, _ = sample_requests(lines, config.sample_seed, config.sample_steps, native)
    data["previews"] = (prompts, options) if config.sample_every_n_steps or config.sample_every_n_epochs else None
    for key in ("sample_prompts", "sample_seed", "sample_steps"):
        data.pop(key)
    return data


def kohya_folders(root) -> str:
    make_dataset(str(root / "img" / "10_mystyle"), count=3)
    make_dataset(str(root / "img" / "2_other"), count=2, caption="mystyle, a cat")
    return str(root / "img")


def test_every_setting_is_written_or_named():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(TRANSLATED) | set(UNMAPPED) == fields and not set(TRANSLATED) & set(UNMAPPED)


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(train_data_dir="/d", token_string="tok"),
        parse_config(gui_config(learning_rate=0.005, lr_scheduler_power=1, min_snr_gamma=10.0)).config,
    ],
)
def test_keys_and_types_are_the_guis(config):
    values, _ = written(config, ModelInfo("/models/m.safetensors", "sdxl", "eps", 1024))
    types = expected_types()
    assert set(values) == set(types)
    assert set(SD1_KEYS) - GUI_DROPPED <= set(values)
    for key, value in values.items():
        if types[key] == "number":
            assert isinstance(value, (int, float)) and not isinstance(value, bool), key
            assert not (isinstance(value, float) and value.is_integer()), f"{key}: the GUI gives whole numbers as ints"
        else:
            assert type(value).__name__ == types[key], key
    assert list(values) == sorted(values)  # the GUI sorts its keys


def test_gui_conventions():
    config = TrainConfig(
        train_data_dir="/d", token_string="tok", seed=-1, resolution=640, use_8bit_adam=True, mixed_precision="bf16",
        max_train_steps=0, epoch=6, caption_source="templates", template_set="object", save_model_as="pt",
        sample_prompts=["[name] on a table --n blurry"], sample_seed=7, sample_steps=12,
    )  # fmt: skip
    values, notes = written(config, ModelInfo("/m/xl.safetensors", "sdxl", "eps", 1024))
    assert (values["seed"], values["max_resolution"], values["optimizer"], values["mixed_precision"]) == (
        0, "640,640", "AdamW8bit", "bf16",
    )  # fmt: skip
    assert (values["epoch"], values["max_train_steps"], values["max_train_epochs"]) == (6, 0, 0)
    assert (values["template"], values["save_model_as"], values["output_name"]) == ("object template", "ckpt", "tok")
    assert (values["pretrained_model_name_or_path"], values["model_list"]) == ("/m/xl.safetensors", "custom")
    assert values["sdxl"] and not values["v2"] and not values["v_parameterization"]
    assert values["sample_prompts"] == "tok on a table --n blurry --d 7 --s 12"
    sd2v, _ = written(config, ModelInfo("/m/v.ckpt", "sd2", "v", 768))
    assert sd2v["v2"] and sd2v["v_parameterization"] and not sd2v["sdxl"]


@pytest.mark.parametrize("family, native", [("sd1", 512), ("sdxl", 1024)])
def test_round_trip_gives_the_same_training(tmp_path, family, native):
    model_file = tmp_path / "model.safetensors"
    model_file.write_bytes(b"x")
    base = dict(train_data_dir=kohya_folders(tmp_path), token_string="mystyle", model_name_or_path=str(model_file))
    configs = [
        TrainConfig(**base, max_train_steps=0, epoch=4, train_batch_size=2, seed=-1, template_set="object",
                    caption_source="captions", caption_extension=".txt", enable_bucket=True, bucket_no_upscale=True,
                    sample_every_n_epochs=1, sample_prompts=["[name] --n ugly"], lr_scheduler="cosine"),
        TrainConfig(**base, max_train_steps=30, seed=12, resolution=256, learning_rate="2e-3", lr_warmup_steps=5,
                    use_8bit_adam=True, noise_offset=0.05, multires_noise_iterations=6, multires_noise_discount=0.25,
                    min_snr_gamma=5, loss_type="huber", huber_c=0.2, shuffle_caption=True, keep_tokens=1,
                    caption_dropout_rate=0.1, save_every_n_steps=10, sample_seed=9, sample_steps=11,
                    caption_source="captions"),
        TrainConfig(**base, max_train_steps=0, max_train_epochs=3, gradient_accumulation_steps=2, template_set="style",
                    caption_source="templates", min_timestep=100, max_timestep=900, ip_noise_gamma=0.1,
                    ip_noise_gamma_random_strength=True, save_every_n_epochs=1, save_model_as="pt",
                    lr_scheduler="polynomial", lr_scheduler_power=2.5, flip_aug=True, mixed_precision="fp16"),
        parse_config(gui_config(train_data_dir=base["train_data_dir"], max_train_steps="", epoch=3)).config,
    ]  # fmt: skip
    model = ModelInfo(str(model_file), family, "eps", native)
    for config in configs:
        back, _ = read_back(tmp_path, config, model)
        if not config.model_name_or_path:
            config = dataclasses.replace(config, model_name_or_path=str(model_file))
        assert effective(back, native) == effective(config, native)
        steps = preview_dataset(back, native)["max_train_steps"], preview_dataset(config, native)["max_train_steps"]
        assert steps[0] == steps[1] and steps[0] > 0


def test_settings_without_a_gui_field_are_named(tmp_path):
    config = TrainConfig(
        train_data_dir="/d", token_string="tok", learning_rate="0.005:100, 1e-3:1000", seed=0, caption_source="both",
        template_set="custom", templates=["a [name] thing"], stages=[], early_stopping_patience=40,
        early_stopping_min_delta=0.01, offload_vae=True, overwrite=True, train_batch_size=80,
        caption_extension=".tags",
    )  # fmt: skip
    config = parse_config({**config.to_dict(), "stages": [{"step": 50, "templates": ["[name] art"]}]}).config
    values, notes = written(config)
    text = "\n".join(notes)
    for named in (
        "custom template lines", "progressive template stages", "early_stopping_patience 40",
        "early_stopping_min_delta 0.01", "VAE offloading", "overwrite", "first rate 0.005", "seed 0",
        "train_batch_size 80", "'.tags'", "output_dir is empty", "pretrained_model_name_or_path is left empty",
        "No model type known", "resolution 0 (no model loaded: 512)",
    ):  # fmt: skip
        assert named in text, named
    assert not {"templates", "stages", "early_stopping_patience", "offload_vae", "overwrite"} & set(values)
    assert values["learning_rate"] == 0.005 and values["template"] == "caption" and values["seed"] == 0
    both, _ = written(dataclasses.replace(config, template_set="style"))
    assert both["template"] == "style template"


def test_model_path_only_when_the_file_is_known(tmp_path):
    named = TrainConfig(train_data_dir="/d", token_string="tok", model_name_or_path="v1-5-pruned [abc123]")
    values, notes = written(named)
    assert values["pretrained_model_name_or_path"] == "" and values["model_list"] == ""
    assert any("'v1-5-pruned [abc123]' is not a file this WebUI knows" in n for n in notes)
    values, notes = written(named, ModelInfo(path="/models/v1-5-pruned.safetensors"))
    assert values["pretrained_model_name_or_path"] == "/models/v1-5-pruned.safetensors"
    assert not any("left empty" in n for n in notes)


def test_plain_folder_and_dataset_config_are_explained(tmp_path):
    plain = make_dataset(str(tmp_path / "plain"), count=2)
    _, notes = written(TrainConfig(train_data_dir=plain, token_string="tok"))
    assert any(os.path.join(plain, "1_tok") in n for n in notes)
    _, notes = written(TrainConfig(train_data_dir=kohya_folders(tmp_path), token_string="tok"))
    assert not any("subfolders of it" in n for n in notes)
    by_toml = TrainConfig(dataset_config="/d/ds.toml", token_string="tok", max_train_steps=0, epoch=5)
    values, notes = written(by_toml)
    assert (values["max_train_epochs"], values["max_train_steps"]) == (5, 0) and any("1600" in n for n in notes)


def test_gui_max_timestep_zero_is_the_full_range():
    assert parse_config(gui_config(max_timestep=0)).config.max_timestep == 1000
    assert parse_config(gui_config(max_timestep=800)).config.max_timestep == 800
