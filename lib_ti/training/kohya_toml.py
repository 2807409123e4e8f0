"""sd-scripts' TOML files: its ``--config_file`` (read and written) and its ``--dataset_config``
(``[general]``, ``[[datasets]]``, ``[[datasets.subsets]]``), with its fallbacks from subset to dataset to general
to the command line.
"""

from __future__ import annotations

import math
import os
import tomllib
from typing import TYPE_CHECKING, Any

from lib_ti.errors import ConfigError

if TYPE_CHECKING:
    from lib_ti.training.config import TrainConfig


def read_toml(path: str, what: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError([f"{what} {path!r} does not exist"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError([f"{what} {path!r} is not valid TOML: {e}"]) from None


def read_config_file(path: str) -> dict[str, Any]:
    """An sd-scripts ``--config_file``: sections are only for reading, every key lands at the top (as there)."""
    flat: dict[str, Any] = {}
    for key, value in read_toml(path, "config file").items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


# ---- writing ---------------------------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML cannot hold {value}")
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    escaped = "".join(ch if ord(ch) >= 0x20 else f"\\u{ord(ch):04x}" for ch in escaped)
    return f'"{escaped}"'


def dump_toml(data: dict[str, Any]) -> str:
    """Flat key = value lines (str, int, float, bool, lists of those): all an sd-scripts config file needs."""
    lines = []
    for key, value in data.items():
        if value is None:
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _first_rate(learning_rate: str, notes: list[str]) -> float:
    first = str(learning_rate).split(",")[0].split(":")[0].strip()
    if "," in str(learning_rate) or ":" in str(learning_rate):
        notes.append(f"learning_rate {learning_rate!r} is a schedule; kohya gets its first rate {first}.")
    return float(first)


def kohya_args(config: "TrainConfig", prompts_file: str = "") -> tuple[dict[str, Any], list[str]]:
    """The sd-scripts train_textual_inversion arguments for this config, and what kohya cannot take."""
    notes: list[str] = []
    c = config
    args: dict[str, Any] = {
        "pretrained_model_name_or_path": c.model_name_or_path or None,
        "dataset_config": c.dataset_config or None,
        "train_data_dir": None if c.dataset_config else c.train_data_dir,
        "output_dir": c.output_dir or None,
        "output_name": c.name,
        "save_model_as": c.save_model_as,
        "token_string": c.token_string,
        "init_word": c.init_word,
        "num_vectors_per_token": c.num_vectors_per_token,
        "learning_rate": _first_rate(c.learning_rate, notes),
        "lr_scheduler": c.lr_scheduler,
        "lr_warmup_steps": c.lr_warmup_steps or (c.lr_warmup / 100 if c.lr_warmup else None),
        "lr_scheduler_num_cycles": c.lr_scheduler_num_cycles,
        "lr_scheduler_power": c.lr_scheduler_power,
        "optimizer_type": "AdamW8bit" if c.use_8bit_adam else c.optimizer,
        "train_batch_size": c.train_batch_size,
        "gradient_accumulation_steps": c.gradient_accumulation_steps,
        "max_train_steps": c.max_train_steps or None,
        "max_train_epochs": c.max_train_epochs or None,
        "save_every_n_steps": c.save_every_n_steps or None,
        "save_every_n_epochs": c.save_every_n_epochs or None,
        "mixed_precision": c.mixed_precision,
        "gradient_checkpointing": c.gradient_checkpointing,
        "seed": c.seed if c.seed >= 0 else None,
        "resolution": f"{c.resolution},{c.resolution}" if c.resolution else None,
        "weights": c.weights or None,
    }
    args.update(_dataset_and_loop_args(c))
    args.update(_caption_args(c, notes))
    if c.sample_prompts and (c.sample_every_n_steps or c.sample_every_n_epochs):
        args["sample_prompts"] = prompts_file or None
        args["sample_every_n_steps"] = c.sample_every_n_steps or None
        args["sample_every_n_epochs"] = c.sample_every_n_epochs or None
    if c.epoch and not c.max_train_steps and not c.max_train_epochs:
        args["max_train_epochs"] = c.epoch
        notes.append(f"epoch {c.epoch} is written as max_train_epochs (sd-scripts counts batches per bucket).")
    if not c.resolution:
        notes.append("resolution 0 (the model's native size) is left out: give kohya a resolution.")
    for key, why in (
        ("stages", "progressive template stages"),
        ("early_stopping_patience", "early stopping"),
        ("offload_vae", "VAE offloading"),
    ):
        if getattr(c, key):
            notes.append(f"kohya has no {why}; {key} is not written.")
    return {k: v for k, v in args.items() if v is not None and v is not False}, notes


def _dataset_and_loop_args(c: "TrainConfig") -> dict[str, Any]:
    return {
        "flip_aug": c.flip_aug,
        "enable_bucket": c.enable_bucket,
        "min_bucket_reso": c.min_bucket_reso if c.enable_bucket else None,
        "max_bucket_reso": c.max_bucket_reso if c.enable_bucket else None,
        "bucket_reso_steps": c.bucket_reso_steps if c.enable_bucket else None,
        "bucket_no_upscale": c.bucket_no_upscale,
        "noise_offset": c.noise_offset or None,
        "noise_offset_random_strength": c.noise_offset_random_strength,
        "adaptive_noise_scale": c.adaptive_noise_scale or None,
        "multires_noise_iterations": c.multires_noise_iterations or None,
        "multires_noise_discount": c.multires_noise_discount if c.multires_noise_iterations else None,
        "ip_noise_gamma": c.ip_noise_gamma or None,
        "ip_noise_gamma_random_strength": c.ip_noise_gamma_random_strength,
        "min_timestep": c.min_timestep or None,
        "max_timestep": c.max_timestep if c.max_timestep != 1000 else None,
        "min_snr_gamma": c.min_snr_gamma or None,
        "loss_type": c.loss_type,
        "huber_c": c.huber_c if c.loss_type in ("huber", "smooth_l1") else None,
        "huber_schedule": c.huber_schedule if c.loss_type in ("huber", "smooth_l1") else None,
        "scale_v_pred_loss_like_noise_pred": c.scale_v_pred_loss_like_noise_pred,
        "v_pred_like_loss": c.v_pred_like_loss or None,
    }


def _caption_args(c: "TrainConfig", notes: list[str]) -> dict[str, Any]:
    args: dict[str, Any] = {
        "caption_extension": c.caption_extension,
        "shuffle_caption": c.shuffle_caption,
        "keep_tokens": c.keep_tokens or None,
        "caption_dropout_rate": c.caption_dropout_rate or None,
        "caption_dropout_every_n_epochs": c.caption_dropout_every_n_epochs or None,
    }
    if c.caption_source == "templates" and c.template_set in ("style", "object"):
        args[f"use_{c.template_set}_template"] = True
        notes.append("kohya's own template lines are used (they differ slightly from TI Trainer's).")
    elif c.caption_source != "captions":
        notes.append(
            f"caption_source {c.caption_source!r} / template_set {c.template_set!r}: kohya trains on the "
            "caption files only."
        )
    return args


def save_kohya_config(config: "TrainConfig", path: str) -> list[str]:
    """Write an sd-scripts ``--config_file`` (and its sample prompts file beside it); returns the notes."""
    from lib_ti.embeddings.files import atomic_write_bytes

    prompts_file = ""
    if config.sample_prompts and (config.sample_every_n_steps or config.sample_every_n_epochs):
        prompts_file = os.path.splitext(path)[0] + "-prompts.txt"
        lines = [line.replace("[name]", config.token_string) for line in config.sample_prompts]
        atomic_write_bytes(prompts_file, ("\n".join(lines) + "\n").encode("utf-8"))
    args, notes = kohya_args(config, prompts_file)
    atomic_write_bytes(path, dump_toml(args).encode("utf-8"))
    return notes
