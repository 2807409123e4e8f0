"""The kohya_ss GUI's Textual Inversion tab JSON (its "Configuration file → Load"), written from a TrainConfig.

The GUI saves every field of its TI tab under the field's own name, keys sorted, numbers as JSON numbers (whole
values without a fraction), cleared options as 0 or "". Settings of ours that it has no field for are named in the
notes, never dropped silently; the file reads back through ``parse_config`` to the same training.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lib_ti.training.config import TrainConfig


@dataclass
class ModelInfo:
    """What the WebUI knows of the model the GUI should train on ("" / 0 where nothing is known)."""

    path: str = ""  # the checkpoint file
    family: str = ""  # sd1 | sd2 | sdxl
    prediction_type: str = "eps"
    native_resolution: int = 0


# Fields of the GUI's TI tab that TI Trainer has no setting for, with the GUI's own defaults (2026 kohya_ss).
GUI_ONLY: dict[str, Any] = {
    "additional_parameters": "", "async_upload": False, "cache_latents": True, "cache_latents_to_disk": False,
    "clip_skip": 1, "color_aug": False, "disable_mmap_load_safetensors": False, "dynamo_backend": "no",
    "dynamo_mode": "default", "dynamo_use_dynamic": False, "dynamo_use_fullgraph": False,
    "extra_accelerate_launch_args": "", "full_fp16": False, "gpu_ids": "", "huber_scale": 1,
    "huggingface_path_in_repo": "", "huggingface_repo_id": "", "huggingface_repo_type": "",
    "huggingface_repo_visibility": "", "huggingface_token": "", "log_config": False, "log_tracker_config": "",
    "log_tracker_name": "", "log_with": "", "logging_dir": "", "lr_scheduler_args": "", "lr_scheduler_type": "",
    "main_process_port": 0, "max_data_loader_n_workers": 0, "max_token_length": 75, "mem_eff_attn": False,
    "metadata_author": "", "metadata_description": "", "metadata_license": "", "metadata_tags": "",
    "metadata_title": "", "multi_gpu": False, "no_token_padding": False, "num_cpu_threads_per_process": 2,
    "num_machines": 1, "num_processes": 1, "optimizer_args": "", "persistent_data_loader_workers": False,
    "prior_loss_weight": 1, "random_crop": False, "reg_data_dir": "", "resume": "", "resume_from_huggingface": "",
    "sample_sampler": "euler_a", "save_as_bool": False, "save_last_n_epochs": 0, "save_last_n_epochs_state": 0,
    "save_last_n_steps": 0, "save_last_n_steps_state": 0, "save_precision": "float", "save_state": False,
    "save_state_on_train_end": False, "save_state_to_huggingface": False, "sdxl_no_half_vae": False,
    "skip_cache_check": False, "stop_text_encoder_training": 0, "vae": "", "vae_batch_size": 0,
    "wandb_api_key": "", "wandb_run_name": "",
    "xformers": "sdpa",  # torch's own attention: there wherever the GUI runs (its default, xformers, may not be)
}  # fmt: skip

# Our settings with no field in the GUI's TI tab: key -> what it is (named in the notes when not the default).
UNMAPPED = {
    "templates": "custom template lines",
    "stages": "progressive template stages",
    "early_stopping_patience": "early stopping",
    "early_stopping_min_delta": "early stopping's least improvement",
    "offload_vae": "VAE offloading",
    "overwrite": "overwriting an existing embedding",
}
# Our settings the writer translates (checked by a test: every TrainConfig field is here or in UNMAPPED).
TRANSLATED = (
    "learning_rate lr_scheduler lr_warmup_steps lr_scheduler_num_cycles lr_scheduler_power optimizer use_8bit_adam "
    "train_batch_size gradient_accumulation_steps max_train_steps save_every_n_steps mixed_precision "
    "gradient_checkpointing seed resolution flip_aug enable_bucket caption_source caption_extension template_set "
    "noise_offset dataset_config max_train_epochs epoch save_every_n_epochs sample_every_n_epochs keep_tokens "
    "shuffle_caption caption_dropout_rate caption_dropout_every_n_epochs min_bucket_reso max_bucket_reso "
    "bucket_reso_steps bucket_no_upscale noise_offset_type noise_offset_random_strength adaptive_noise_scale "
    "multires_noise_iterations multires_noise_discount ip_noise_gamma ip_noise_gamma_random_strength min_timestep "
    "max_timestep min_snr_gamma loss_type huber_c huber_schedule scale_v_pred_loss_like_noise_pred v_pred_like_loss "
    "lr_warmup sample_every_n_steps sample_prompts sample_seed sample_steps save_model_as weights train_data_dir "
    "token_string init_word num_vectors_per_token output_name output_dir model_name_or_path"
).split()
# The GUI's sliders stop here: a value beyond is kept in the file but the GUI's field cannot show it.
SLIDER_LIMITS = {
    "train_batch_size": (1, 64), "gradient_accumulation_steps": (1, 120), "keep_tokens": (0, 32),
    "min_snr_gamma": (0, 20), "bucket_reso_steps": (1, 128), "multires_noise_iterations": (0, 64),
    "min_bucket_reso": (64, 4096), "max_bucket_reso": (64, 4096), "lr_warmup": (0, 100),
}  # fmt: skip
CAPTION_EXTENSIONS = ("", ".cap", ".caption", ".txt")  # the GUI's dropdown takes no other value
TEMPLATES = {"style": "style template", "object": "object template"}


def _num(value: float) -> int | float:
    """A number as the GUI's fields give it back: whole values without a fraction."""
    return int(value) if float(value).is_integer() else float(value)


def _first_rate(learning_rate: str, notes: list[str]) -> float:
    first = str(learning_rate).split(",")[0].split(":")[0].strip()
    if "," in str(learning_rate) or ":" in str(learning_rate):
        notes.append(f"learning_rate {learning_rate!r} is a schedule; the kohya_ss GUI gets its first rate {first}.")
    return float(first)


def _model_keys(c: "TrainConfig", model: ModelInfo, notes: list[str]) -> dict[str, Any]:
    if model.path:
        path = model.path
    else:
        path = c.model_name_or_path if os.path.isfile(c.model_name_or_path) else ""
        what = f"the checkpoint {c.model_name_or_path!r}" if c.model_name_or_path else "the model"
        if not path:
            notes.append(
                f"pretrained_model_name_or_path is left empty: {what} is not a file this WebUI knows the path of; "
                "choose it in the kohya_ss GUI."
            )
    if not model.family:
        notes.append("No model type known (no model loaded): tick sdxl / v2 / v_parameterization in the GUI yourself.")
    v_pred = model.prediction_type == "v"
    return {
        "pretrained_model_name_or_path": path,
        "model_list": "custom" if path else "",
        "sdxl": model.family == "sdxl",
        "v2": model.family == "sd2",
        "v_parameterization": model.family == "sd2" and v_pred,
    }


def _length_keys(c: "TrainConfig", notes: list[str]) -> dict[str, Any]:
    """The GUI counts steps from 'epoch' only when max_train_steps is 0 and there is no dataset_config."""
    epochs, steps, epoch = c.max_train_epochs, c.max_train_steps, c.epoch
    if not steps and not epochs and c.dataset_config:
        epochs, epoch = c.epoch, 1
        notes.append(
            f"epoch {c.epoch} with a dataset_config: the kohya_ss GUI skips its epoch count there (sd-scripts would "
            "train 1600 steps), so it is written as max_train_epochs (sd-scripts counts batches per bucket)."
        )
    return {"epoch": epoch or 1, "max_train_epochs": epochs, "max_train_steps": steps}


def _caption_keys(c: "TrainConfig", notes: list[str]) -> dict[str, Any]:
    template = "caption"
    if c.caption_source != "captions" and c.template_set in TEMPLATES:
        template = TEMPLATES[c.template_set]
        if c.caption_source == "both":
            notes.append(
                f"caption_source 'both' (caption files and template lines): the kohya_ss GUI uses one or the other; "
                f"written as template '{template}' (its template lines, without the captions)."
            )
    elif c.caption_source != "captions":
        notes.append("Not written: custom template lines (the kohya_ss GUI has none); template 'caption' is written.")
    if c.caption_extension not in CAPTION_EXTENSIONS:
        notes.append(
            f"caption_extension {c.caption_extension!r}: the kohya_ss GUI's list has only "
            f"{', '.join(repr(e) for e in CAPTION_EXTENSIONS)}; rename the caption files or pick one there."
        )
    return {"template": template, "caption_extension": c.caption_extension}


def _sample_prompts(c: "TrainConfig") -> str:
    """Our preview prompts as sd-scripts' lines: the token in place of [name], the seed and steps as --d / --s."""
    lines = []
    for line in c.sample_prompts or [c.token_string]:
        line = line.replace("[name]", c.token_string)
        line += "" if " --d " in f"{line} " else f" --d {c.sample_seed}"
        line += "" if " --s " in f"{line} " else f" --s {c.sample_steps}"
        lines.append(line)
    return "\n".join(lines)


def _dataset_notes(c: "TrainConfig", notes: list[str]) -> None:
    from lib_ti.training.layout import folder_images, repeats_folders

    if c.dataset_config or not os.path.isdir(c.train_data_dir) or repeats_folders(c.train_data_dir):
        return
    if folder_images(c.train_data_dir):
        notes.append(
            f"train_data_dir {c.train_data_dir!r} holds the images itself; the kohya_ss GUI only trains "
            f"'<repeats>_<name>' subfolders of it: move them into {os.path.join(c.train_data_dir, '1_' + c.token_string)}"
            " (TI Trainer reads that the same way) or give a dataset_config."
        )


def _unmapped_notes(c: "TrainConfig", notes: list[str]) -> None:
    from lib_ti.training.config import TrainConfig

    default = TrainConfig()
    for key, what in UNMAPPED.items():
        value = getattr(c, key)
        if key == "templates" and c.template_set != "custom":
            continue
        if key == "early_stopping_min_delta" and not c.early_stopping_patience:
            continue
        if value != getattr(default, key):
            shown = f"{len(value)} line(s)" if isinstance(value, list) else repr(value)
            notes.append(f"Not written: {what} ({key} {shown}); the kohya_ss GUI has no such setting.")
    for key, (low, high) in SLIDER_LIMITS.items():
        if not low <= getattr(c, key) <= high:
            notes.append(f"{key} {getattr(c, key)}: the kohya_ss GUI's slider goes from {low} to {high}.")


def _training_keys(c: "TrainConfig", notes: list[str]) -> dict[str, Any]:
    if c.seed == 0:
        notes.append("seed 0: the kohya_ss GUI reads 0 as 'no seed' (random); pick another seed to repeat the run.")
    return {
        "learning_rate": _num(_first_rate(c.learning_rate, notes)),
        "lr_scheduler": c.lr_scheduler,
        "lr_warmup": _num(c.lr_warmup),
        "lr_warmup_steps": c.lr_warmup_steps,
        "lr_scheduler_num_cycles": c.lr_scheduler_num_cycles,
        "lr_scheduler_power": _num(c.lr_scheduler_power),
        "optimizer": "AdamW8bit" if c.use_8bit_adam or c.optimizer == "AdamW8bit" else c.optimizer,
        "train_batch_size": c.train_batch_size,
        "gradient_accumulation_steps": c.gradient_accumulation_steps,
        "save_every_n_steps": c.save_every_n_steps,
        "save_every_n_epochs": c.save_every_n_epochs,
        "mixed_precision": c.mixed_precision,
        "gradient_checkpointing": c.gradient_checkpointing,
        "seed": max(c.seed, 0),  # the GUI's "no seed" is 0, ours -1
        "sample_every_n_steps": c.sample_every_n_steps,
        "sample_every_n_epochs": c.sample_every_n_epochs,
        "sample_prompts": _sample_prompts(c) if c.sample_every_n_steps or c.sample_every_n_epochs else "",
    }


def _loop_keys(c: "TrainConfig") -> dict[str, Any]:
    keys = (
        "flip_aug enable_bucket bucket_no_upscale min_bucket_reso max_bucket_reso bucket_reso_steps keep_tokens "
        "shuffle_caption caption_dropout_rate caption_dropout_every_n_epochs noise_offset_type noise_offset "
        "noise_offset_random_strength adaptive_noise_scale multires_noise_iterations multires_noise_discount "
        "ip_noise_gamma ip_noise_gamma_random_strength min_timestep max_timestep min_snr_gamma loss_type huber_c "
        "huber_schedule scale_v_pred_loss_like_noise_pred v_pred_like_loss"
    ).split()
    values = {key: getattr(c, key) for key in keys}
    return {k: _num(v) if isinstance(v, float) else v for k, v in values.items()}


def gui_values(config: "TrainConfig", model: ModelInfo | None = None) -> tuple[dict[str, Any], list[str]]:
    """Every key the GUI's TI tab saves, in its conventions, and notes on what it cannot take."""
    c, model, notes = config, model or ModelInfo(), []
    resolution = c.resolution or model.native_resolution or 512
    if not c.resolution:
        known = "the model's native size" if model.native_resolution else "no model loaded: 512"
        notes.append(f"resolution 0 ({known}) is written as max_resolution {resolution},{resolution}.")
    if c.save_model_as == "pt":
        notes.append("save_model_as 'pt' is written as 'ckpt', the kohya_ss GUI's pickle format for embeddings.")
    values: dict[str, Any] = {
        **GUI_ONLY,
        **_model_keys(c, model, notes),
        **_length_keys(c, notes),
        **_caption_keys(c, notes),
        **_training_keys(c, notes),
        **_loop_keys(c),
        "train_data_dir": c.train_data_dir,
        "dataset_config": c.dataset_config,
        "output_dir": c.output_dir,
        "output_name": c.name,
        "token_string": c.token_string,
        "init_word": c.init_word,
        "num_vectors_per_token": c.num_vectors_per_token,
        "weights": c.weights,
        "max_resolution": f"{resolution},{resolution}",
        "save_model_as": "ckpt" if c.save_model_as == "pt" else c.save_model_as,
    }
    if not c.output_dir:
        notes.append("output_dir is empty (TI Trainer's run folder): set the kohya_ss GUI's output folder there.")
    _dataset_notes(c, notes)
    _unmapped_notes(c, notes)
    return dict(sorted(values.items())), notes


def save_gui_config(config: "TrainConfig", path: str, model: ModelInfo | None = None) -> list[str]:
    """Write the GUI's TI JSON (atomically); returns the notes for the save message."""
    from lib_ti.embeddings.files import atomic_write_bytes

    values, notes = gui_values(config, model)
    atomic_write_bytes(path, json.dumps(values, indent=2).encode("utf-8"))
    return notes
