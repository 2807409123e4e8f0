"""kohya's keys: the names sd-scripts and the kohya_ss GUI use, how their values translate, the keys that have
no effect here (with the reason), and the run length computed the way they compute it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lib_ti.training.config import TrainConfig
    from lib_ti.training.layout import DatasetPlan

SD_SCRIPTS_DEFAULT_STEPS = 1600  # sd-scripts' --max_train_steps default

# kohya / kohya_ss GUI / sd-scripts key -> our key
ALIASES = {
    "pretrained_model_name_or_path": "model_name_or_path",
    "caption_extention": "caption_extension",
    "sample_sampler_seed": "sample_seed",
    "optimizer_type": "optimizer",
    "dataset_repeats": "num_repeats",
}

# Keys that have a meaning in kohya but none here: reported with the reason, not silently dropped.
IGNORED = {
    "cache_latents": "latents are always cached",
    "cache_latents_to_disk": "latents are cached in memory",
    "vae_batch_size": "latents are encoded once, in batches of train_batch_size",
    "skip_cache_check": "latents are cached in memory",
    "xformers": "the WebUI's cross-attention setting is used",
    "sdpa": "the WebUI's cross-attention setting is used",
    "mem_eff_attn": "the WebUI's cross-attention setting is used",
    "max_data_loader_n_workers": "images are loaded once before training",
    "persistent_data_loader_workers": "images are loaded once before training",
    "save_precision": "embeddings are saved in float32",
    "full_fp16": "use mixed_precision",
    "full_bf16": "use mixed_precision",
    "mixed_precision_type": "use mixed_precision",
    "sdxl_no_half_vae": "the WebUI's VAE settings apply",
    "no_half_vae": "the WebUI's VAE settings apply",
    "logging_dir": "the log is written next to the checkpoints",
    "log_prefix": "the log is written next to the checkpoints",
    "log_with": "the log is written next to the checkpoints",
    "log_config": "the settings are saved next to the checkpoints",
    "log_tracker_name": "no external tracker",
    "log_tracker_config": "no external tracker",
    "use_wandb": "no external tracker",
    "wandb_api_key": "no external tracker",
    "wandb_run_name": "no external tracker",
    "sample_sampler": "previews use the WebUI's default sampler",
    "vae": "training uses the VAE loaded in the WebUI",
    "clip_skip": "the WebUI's 'Clip skip' setting applies to training and generation alike",
    "sdxl": "the loaded model decides",
    "v2": "the loaded model decides",
    "v_parameterization": "the loaded model decides",
    "model_list": "training uses the loaded model",
    "stop_text_encoder_training": "only the new vectors are trained",
    "no_token_padding": "prompts are encoded the way the WebUI encodes them",
    "max_token_length": "prompts are encoded the way the WebUI encodes them",
    "save_state": "the optimizer state is saved with every checkpoint",
    "save_state_on_train_end": "the optimizer state is saved with every checkpoint",
    "resume": "use 'weights' to continue from an embedding",
    "color_aug": "not supported",
    "random_crop": "images are centre-cropped",
    "reg_data_dir": "Textual Inversion uses no regularisation images",
    "prior_loss_weight": "Textual Inversion uses no regularisation images",
    "save_last_n_steps": "every checkpoint is kept",
    "save_last_n_steps_state": "every checkpoint is kept",
    "save_last_n_epochs": "every checkpoint is kept",
    "save_last_n_epochs_state": "every checkpoint is kept",
    "save_as_bool": "the kohya_ss GUI's own switch",
    "optimizer_args": "AdamW with its defaults",
    "lr_scheduler_args": "the schedulers take no extra arguments here",
    "lr_scheduler_type": "use lr_scheduler",
    "additional_parameters": "command-line flags cannot be passed to the WebUI",
    "lowram": "not supported",
    "highvram": "not supported",
    "huber_scale": "not supported (1 is used; the default 'snr' schedule ignores it)",
    "debiased_estimation_loss": "not supported",
    "zero_terminal_snr": "the loaded model's noise schedule is used as it is",
    "masked_loss": "not supported",
    "gpu_ids": "the WebUI's device is used",
    "multi_gpu": "the WebUI's device is used",
    "num_processes": "the WebUI's device is used",
    "num_machines": "the WebUI's device is used",
    "num_cpu_threads_per_process": "the WebUI's device is used",
    "main_process_port": "the WebUI's device is used",
    "extra_accelerate_launch_args": "the WebUI's device is used",
    "dynamo_backend": "no torch.compile",
    "dynamo_mode": "no torch.compile",
    "dynamo_use_fullgraph": "no torch.compile",
    "dynamo_use_dynamic": "no torch.compile",
    "async_upload": "nothing is uploaded",
    "huggingface_repo_id": "nothing is uploaded",
    "huggingface_token": "nothing is uploaded",
    "huggingface_repo_type": "nothing is uploaded",
    "huggingface_repo_visibility": "nothing is uploaded",
    "huggingface_path_in_repo": "nothing is uploaded",
    "resume_from_huggingface": "nothing is uploaded",
    "save_state_to_huggingface": "nothing is uploaded",
    "metadata_author": "the embedding's metadata names the run",
    "metadata_description": "the embedding's metadata names the run",
    "metadata_license": "the embedding's metadata names the run",
    "metadata_tags": "the embedding's metadata names the run",
    "metadata_title": "the embedding's metadata names the run",
    "disable_mmap_load_safetensors": "training uses the loaded model",
    "output_config": "sd-scripts' own switch",
    "config_file": "sd-scripts' own switch",
    "sample_at_first": "previews start at the first interval",
    "save_n_epoch_ratio": "use save_every_n_epochs",
    "caption_tag_dropout_rate": "not supported",
    "token_warmup_min": "not supported",
    "token_warmup_step": "not supported",
    "enable_wildcard": "not supported",
    "face_crop_aug_range": "not supported",
}

TEMPLATE_CHOICES = {
    "caption": ("captions", None),
    "captions": ("captions", None),
    "object template": ("templates", "object"),
    "style template": ("templates", "style"),
    "object": ("templates", "object"),
    "style": ("templates", "style"),
}

# the kohya_ss GUI writes these on every TI save and TI Trainer's form never does: they mark a GUI file, whose
# conventions apply (seed 0 = random, empty max_train_steps = counted from 'epoch')
GUI_MARKERS = ("max_resolution", "template", "model_list")
# kohya_ss GUI saves these as 0 or "" when off; sd-scripts receives None for them
ZERO_MEANS_OFF = ("max_train_epochs", "save_every_n_epochs", "sample_every_n_epochs", "save_every_n_steps")


def is_gui_config(data: dict[str, Any]) -> bool:
    return any(key in data for key in GUI_MARKERS)


def parse_resolution(value: Any) -> tuple[int, ...]:
    """``512``, ``"512,768"``, ``"512x768"`` or ``[512, 768]`` as whole numbers."""
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (int(value),)
    return tuple(int(float(p)) for p in re.split(r"[,x ]+", str(value).strip()) if p)


def sample_prompt_options(line: str) -> dict[str, Any]:
    """sd-scripts' prompt line options: ``--n`` negative, ``--w``/``--h`` size, ``--d`` seed, ``--s`` steps,
    ``--l`` CFG scale. Returns the prompt under "prompt" and each option found; others are listed under
    "ignored"."""
    parts = line.split(" --")
    out: dict[str, Any] = {"prompt": parts[0].strip(), "ignored": []}
    patterns = (
        ("width", r"w (\d+)", int),
        ("height", r"h (\d+)", int),
        ("seed", r"d (\d+)", int),
        ("steps", r"s (\d+)", lambda v: max(1, min(1000, int(v)))),
        ("cfg_scale", r"l ([\d.]+)", float),
        ("negative_prompt", r"n (.+)", str.strip),
    )
    for part in parts[1:]:
        for key, pattern, convert in patterns:
            match = re.match(pattern, part, re.IGNORECASE)
            if match:
                try:
                    out[key] = convert(match.group(1))
                except ValueError:
                    out["ignored"].append("--" + part)
                break
        else:
            out["ignored"].append("--" + part.strip())
    return out


@dataclass
class Length:
    """How long the run is, and how that was worked out (said to the user before training)."""

    max_steps: int
    steps_per_epoch: int
    batches_per_epoch: int
    epochs: int
    explanation: str


def resolve_length(config: "TrainConfig", plan: "DatasetPlan") -> Length:
    """Steps as kohya computes them: sd-scripts' max_train_epochs × ceil(batches / accumulation), else
    max_train_steps, else the kohya_ss GUI's ceil(images × repeats / batch / accumulation × epoch)."""
    batches = plan.batches_per_epoch()
    accumulation = max(1, config.gradient_accumulation_steps)
    per_epoch = max(1, math.ceil(batches / accumulation))
    if config.max_train_epochs > 0:
        steps = config.max_train_epochs * per_epoch
        how = (
            f"max_train_epochs {config.max_train_epochs} × {per_epoch} steps per epoch "
            f"({batches} batches / accumulation {accumulation}) = {steps} steps (sd-scripts' count)"
        )
    elif config.max_train_steps > 0:
        steps = config.max_train_steps
        how = f"max_train_steps {steps}"
    else:
        images = plan.images_with_repeats
        epochs = max(1, config.epoch)
        steps = math.ceil(images / config.train_batch_size / accumulation * epochs)
        how = (
            f"epoch {epochs} × {images} images with repeats / batch {config.train_batch_size} / accumulation "
            f"{accumulation} = {steps} steps (the kohya_ss GUI's count)"
        )
    epochs = math.ceil(steps / per_epoch)
    return Length(steps, per_epoch, batches, epochs, f"{how}; {per_epoch} steps per epoch, {epochs} epoch(s).")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _zero(value: Any) -> bool:
    try:
        return _blank(value) or float(value) == 0
    except (TypeError, ValueError):
        return False


def _read_prompt_file(path: str, notes: list[str]) -> Any:
    """sd-scripts takes sample_prompts as a file: one prompt per line (.txt); other formats are not read."""
    if not path.lower().endswith(".txt"):
        notes.append(f"sample_prompts {path!r}: only .txt prompt files are read; no previews from it.")
        return []
    with open(path, encoding="utf-8-sig") as f:
        return f.read()


def normalise_kohya(data: dict[str, Any], sd_scripts: bool = False) -> tuple[dict[str, Any], list[str]]:
    """kohya's conventions turned into plain values before the keys are read: empty means off or default,
    the length rules of the kohya_ss GUI (``sd_scripts``: a ``--config_file`` TOML, whose defaults apply)."""
    import os

    out, notes = dict(data), []
    gui = is_gui_config(data)
    for key in ("caption_extension", "caption_extention"):
        if key in out and _blank(out[key]):
            out[key] = ".caption"
            notes.append("caption_extension is empty: kohya's default '.caption' is used ('.txt' where none exists).")
    for key in ZERO_MEANS_OFF:
        if key in out and _blank(out[key]):
            out[key] = 0
    for key, template in (("use_style_template", "style template"), ("use_object_template", "object template")):
        if out.pop(key, None) in (True, "true", "True", 1):
            out["template"] = template
    warmup = out.get("lr_warmup_steps")
    if isinstance(warmup, float) and 0 < warmup < 1:  # sd-scripts reads a float below 1 as a share of the steps
        out["lr_warmup"], out["lr_warmup_steps"] = warmup * 100, 0
    prompts = out.get("sample_prompts")
    if isinstance(prompts, str) and "\n" not in prompts and os.path.isfile(prompts.strip()):
        out["sample_prompts"] = _read_prompt_file(prompts.strip(), notes)
    if gui:  # the GUI saves some cleared number boxes as false (min_timestep in its SDXL config): off, as there
        from lib_ti.training.config import TrainConfig

        numeric = {f.name for f in dataclasses.fields(TrainConfig) if f.type in ("int", "float")}
        out.update({key: 0 for key, value in out.items() if value is False and ALIASES.get(key, key) in numeric})
    if gui and "max_timestep" in out and _zero(out["max_timestep"]):
        out["max_timestep"] = 1000  # the GUI passes max_timestep 0 as "not set": sd-scripts' full range
    if gui and _zero(out.get("seed", 1)):
        out["seed"] = -1  # the kohya_ss GUI passes seed 0 as "no seed"
    if gui and _blank(out.get("lr_scheduler_num_cycles")) and "lr_scheduler_num_cycles" in out:
        out["lr_scheduler_num_cycles"] = out.get("epoch") or 1  # what the GUI passes when it is empty
    _normalise_length(out, gui, sd_scripts, notes)
    return out, notes


def _normalise_length(out: dict[str, Any], gui: bool, sd_scripts: bool, notes: list[str]) -> None:
    epochs = out.get("max_train_epochs")
    by_epochs = not _zero(epochs) or not _zero(out.get("epoch"))
    steps_missing = ("max_train_steps" in out and _zero(out["max_train_steps"])) or (
        "max_train_steps" not in out and (sd_scripts or by_epochs)
    )
    if not steps_missing:
        if not _zero(out.get("epoch")) and _zero(epochs) and "max_train_steps" in out:
            notes.append(
                f"'epoch' has no effect on the length: max_train_steps {out['max_train_steps']} sets it, as in the "
                "kohya_ss GUI."
            )
        return
    if not _zero(epochs):
        out["max_train_steps"] = 0
    elif (gui or not _zero(out.get("epoch"))) and _blank(out.get("dataset_config")):
        out["max_train_steps"] = 0  # the GUI computes it from 'epoch' and the folders
        if _zero(out.get("epoch")):
            out["epoch"] = 1
    elif gui or sd_scripts:
        out["max_train_steps"] = SD_SCRIPTS_DEFAULT_STEPS
        reason = (
            "with a dataset_config the kohya_ss GUI skips its epoch calculation"
            if gui
            else "sd-scripts' default when neither max_train_steps nor max_train_epochs is given"
        )
        notes.append(
            f"max_train_steps is empty: kohya would train {SD_SCRIPTS_DEFAULT_STEPS} steps ({reason}); so does "
            "TI Trainer. Set max_train_epochs to train by epochs."
        )


NOISE_OFFSET_TYPES = ("Original", "Multires")
LOSS_TYPES = ("l1", "l2", "huber", "smooth_l1")
HUBER_SCHEDULES = ("constant", "exponential", "snr")


def validate_kohya(config: "TrainConfig") -> list[str]:
    """Problems with the kohya options; the length needs max_train_steps, max_train_epochs or epoch."""
    problems = []
    if config.max_train_steps < 0 or (config.max_train_steps == 0 and not (config.max_train_epochs or config.epoch)):
        problems.append(
            f"max_train_steps: must be positive, or 0 with max_train_epochs or epoch; got {config.max_train_steps}"
        )
    for key in (
        "max_train_epochs", "epoch", "save_every_n_epochs", "sample_every_n_epochs", "keep_tokens",
        "caption_dropout_every_n_epochs", "multires_noise_iterations", "min_timestep", "max_bucket_reso",
    ):  # fmt: skip
        if getattr(config, key) < 0:
            problems.append(f"{key}: must be 0 (off) or positive, got {getattr(config, key)}")
    if not 0 <= config.caption_dropout_rate <= 1:
        problems.append(f"caption_dropout_rate: a fraction from 0 to 1, got {config.caption_dropout_rate}")
    if not 0 <= config.min_timestep <= config.max_timestep <= 1000 or config.min_timestep >= 1000:
        problems.append(
            f"min_timestep/max_timestep: need 0 <= min <= max <= 1000 and min < 1000, got {config.min_timestep}/"
            f"{config.max_timestep}"
        )
    if config.bucket_reso_steps <= 0 or config.min_bucket_reso <= 0:
        problems.append("bucket_reso_steps and min_bucket_reso must be positive")
    for key, allowed in (
        ("noise_offset_type", NOISE_OFFSET_TYPES),
        ("loss_type", LOSS_TYPES),
        ("huber_schedule", HUBER_SCHEDULES),
    ):
        if getattr(config, key) not in allowed:
            problems.append(f"{key}: must be one of {', '.join(allowed)}; got {getattr(config, key)!r}")
    if config.loss_type in ("huber", "smooth_l1") and not 0 < config.huber_c <= 1:
        problems.append(f"huber_c: must be above 0 and at most 1, got {config.huber_c}")
    if config.min_snr_gamma < 0 or config.ip_noise_gamma < 0 or config.v_pred_like_loss < 0:
        problems.append("min_snr_gamma, ip_noise_gamma and v_pred_like_loss must be 0 (off) or positive")
    return problems


def apply_length(config: "TrainConfig", length: Length) -> tuple["TrainConfig", list[str]]:
    """The config with the counted steps in max_train_steps, and the GUI's warmup percentage turned into steps."""
    notes = []
    warmup = config.lr_warmup_steps
    if config.lr_warmup and not warmup:
        warmup = int(length.max_steps * config.lr_warmup / 100)
        notes.append(f"lr_warmup {config.lr_warmup:g}% of {length.max_steps} steps = {warmup} steps.")
    changed = dataclasses.replace(config, max_train_steps=length.max_steps, lr_warmup_steps=warmup, lr_warmup=0.0)
    return changed, notes


def sample_requests(lines: list[str], seed: int, steps: int, resolution: int):
    """Each preview line's prompt and its options (kohya's --n/--w/--h/--d/--s/--l, the run's values otherwise),
    and notes naming options that are not used."""
    from lib_ti.training.model import SampleOptions

    prompts, options, notes = [], [], []
    for line in lines:
        parsed = sample_prompt_options(line)
        prompts.append(parsed["prompt"])
        options.append(
            SampleOptions(
                negative_prompt=parsed.get("negative_prompt", ""),
                width=parsed.get("width", resolution) // 8 * 8,
                height=parsed.get("height", resolution) // 8 * 8,
                seed=parsed.get("seed", seed),
                steps=parsed.get("steps", steps),
                cfg_scale=parsed.get("cfg_scale"),
            )
        )
        if parsed["ignored"]:
            notes.append(f"Sample prompt options not used here: {' '.join(parsed['ignored'])}")
    return prompts, options, notes
