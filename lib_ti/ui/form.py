"""The tab's form: which settings it shows, in what order, and how its values become a config and back."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from lib_ti.training.config import (
    CAPTION_SOURCES,
    LR_SCHEDULERS,
    MIXED_PRECISION,
    SAVE_FORMATS,
    TEMPLATE_SETS,
    Stage,
    TrainConfig,
)
from lib_ti.errors import ConfigError
from lib_ti.training.kohya import HUBER_SCHEDULES, LOSS_TYPES, NOISE_OFFSET_TYPES


@dataclass(frozen=True)
class Field:
    key: str
    label: str
    kind: str  # text | lines | int | float | bool | choice | slider | stages
    choices: tuple[str, ...] = ()
    info: str = ""
    group: str = "Embedding"


FIELDS: tuple[Field, ...] = (
    Field("token_string", "Token", "text", info="The word you will type in prompts, e.g. mystyle", group=""),
    Field(
        "init_word",
        "Initialization text",
        "text",
        info="Words close to the concept; their embeddings are the start",
        group="",
    ),
    Field(
        "num_vectors_per_token",
        "Vectors per token",
        "slider",
        info="1-75; more vectors learn more, and use more of the prompt",
        group="",
    ),
    Field("train_data_dir", "Dataset directory", "text", info="Images with optional same-name .txt captions", group=""),
    Field("output_name", "File name", "text", info="Empty: the token. This is the name you type in the WebUI"),
    Field("overwrite", "Overwrite an existing embedding of that name", "bool"),
    Field(
        "weights", "Continue from embedding file", "text", info="Resume: path to an earlier embedding (and its step)"
    ),
    Field("learning_rate", "Learning rate", "text", group="Training", info="5e-3, or a schedule: 0.005:100, 1e-3:1000"),
    Field("lr_scheduler", "LR scheduler", "choice", LR_SCHEDULERS, group="Training"),
    Field("lr_warmup_steps", "Warmup steps", "int", group="Training"),
    Field("lr_scheduler_num_cycles", "Cycles (cosine_with_restarts)", "int", group="Training"),
    Field("lr_scheduler_power", "Power (polynomial)", "float", group="Training"),
    Field("train_batch_size", "Batch size", "int", group="Training"),
    Field("gradient_accumulation_steps", "Gradient accumulation steps", "int", group="Training"),
    Field("max_train_steps", "Max steps", "int", group="Training"),
    Field("save_every_n_steps", "Save a checkpoint every N steps (0 = off)", "int", group="Output"),
    Field("seed", "Seed (-1 = random)", "int", group="Training"),
    Field("resolution", "Resolution (0 = the model's native size)", "int", group="Dataset"),
    Field("flip_aug", "Add horizontally flipped images", "bool", group="Dataset"),
    Field("enable_bucket", "Aspect-ratio buckets", "bool", group="Dataset"),
    Field("mixed_precision", "Mixed precision (CUDA only)", "choice", MIXED_PRECISION, group="Advanced"),
    Field("gradient_checkpointing", "Gradient checkpointing (less memory, slower)", "bool", group="Advanced"),
    Field("use_8bit_adam", "8-bit AdamW (bitsandbytes, CUDA)", "bool", group="Advanced"),
    Field("noise_offset", "Noise offset", "float", group="Advanced"),
    Field(
        "early_stopping_patience",
        "Early stop after N steps without improvement (0 = off)",
        "int",
        group="Advanced",
        info="Compares the smoothed loss; the log says at which step and why",
    ),
    Field("early_stopping_min_delta", "Early stop: least relative improvement", "float", group="Advanced"),
    Field("offload_vae", "Low memory: move the VAE off the GPU while training", "bool", group="Advanced"),
    Field("save_model_as", "File format", "choice", SAVE_FORMATS, group="Output"),
    Field("output_dir", "Run folder (empty = the setting's folder / name)", "text", group="Output"),
    Field(
        "model_name_or_path",
        "Model name (informational)",
        "text",
        group="Output",
        info="Training always uses the model loaded in the WebUI",
    ),
    Field("caption_source", "Captions from", "choice", CAPTION_SOURCES, group="Dataset"),
    Field("template_set", "Templates", "choice", TEMPLATE_SETS, group="Dataset"),
    Field(
        "templates",
        "Custom templates, one per line",
        "lines",
        group="Dataset",
        info="[name] = the token, [filewords] = the image's caption",
    ),
    Field("caption_extension", "Caption file extension", "text", group="Dataset"),
    Field(
        "stages",
        "Progressive stages: STEP: template | template",
        "stages",
        group="Dataset",
        info="e.g. 300: [name] painting | [name] art",
    ),
    Field("sample_every_n_steps", "Preview every N steps (0 = off)", "int", group="Previews"),
    Field("sample_prompts", "Preview prompts, one per line ([name] = the token)", "lines", group="Previews"),
    Field("sample_seed", "Preview seed", "int", group="Previews"),
    Field("sample_steps", "Preview sampling steps", "int", group="Previews"),
)

KOHYA = "kohya: dataset"
LOSS = "kohya: loss"
KOHYA_FIELDS: tuple[Field, ...] = (
    Field("dataset_config", "Dataset config TOML (replaces the dataset directory)", "text", group=KOHYA),
    Field("max_train_epochs", "Epochs (0 = use Max steps)", "int", group=KOHYA, info="sd-scripts' max_train_epochs"),
    Field("epoch", "kohya_ss GUI epochs (when Max steps is 0)", "int", group=KOHYA),
    Field("save_every_n_epochs", "Save a checkpoint every N epochs (0 = off)", "int", group=KOHYA),
    Field("sample_every_n_epochs", "Preview every N epochs (0 = off)", "int", group=KOHYA),
    Field("shuffle_caption", "Shuffle caption tags", "bool", group=KOHYA),
    Field("keep_tokens", "Keep the first N tags in place", "int", group=KOHYA),
    Field("caption_dropout_rate", "Caption dropout rate", "float", group=KOHYA),
    Field("caption_dropout_every_n_epochs", "Drop every caption every N epochs (0 = off)", "int", group=KOHYA),
    Field("min_bucket_reso", "Smallest bucket side", "int", group=KOHYA),
    Field("max_bucket_reso", "Largest bucket side", "int", group=KOHYA),
    Field("bucket_reso_steps", "Bucket step", "int", group=KOHYA),
    Field("bucket_no_upscale", "Buckets never upscale", "bool", group=KOHYA),
    Field("lr_warmup", "Warmup, % of the steps (kohya_ss GUI)", "float", group=KOHYA),
    Field("noise_offset_type", "Noise offset type", "choice", NOISE_OFFSET_TYPES, group=LOSS),
    Field("noise_offset_random_strength", "Random noise offset strength", "bool", group=LOSS),
    Field("adaptive_noise_scale", "Adaptive noise scale", "float", group=LOSS),
    Field("multires_noise_iterations", "Multires noise iterations (0 = off)", "int", group=LOSS),
    Field("multires_noise_discount", "Multires noise discount", "float", group=LOSS),
    Field("ip_noise_gamma", "Input perturbation noise gamma", "float", group=LOSS),
    Field("ip_noise_gamma_random_strength", "Random input perturbation strength", "bool", group=LOSS),
    Field("min_timestep", "Min timestep", "int", group=LOSS),
    Field("max_timestep", "Max timestep", "int", group=LOSS),
    Field("min_snr_gamma", "Min-SNR gamma (0 = off)", "float", group=LOSS),
    Field("loss_type", "Loss", "choice", LOSS_TYPES, group=LOSS),
    Field("huber_c", "Huber c", "float", group=LOSS),
    Field("huber_schedule", "Huber schedule", "choice", HUBER_SCHEDULES, group=LOSS),
    Field("scale_v_pred_loss_like_noise_pred", "Scale v-prediction loss like noise prediction", "bool", group=LOSS),
    Field("v_pred_like_loss", "Add v-prediction-like loss (0 = off)", "float", group=LOSS),
)
FIELDS = FIELDS + KOHYA_FIELDS

# "" = always visible above the groups (what every run needs); the groups follow the way users think of a run.
GROUPS = ("Dataset", "Embedding", "Training", "Output", "Previews", "Advanced", KOHYA, LOSS)

# Fields that only apply to a choice made elsewhere: key -> (the fields it depends on, when it applies).
CONDITIONS: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Any]], bool]]] = {
    "lr_scheduler_num_cycles": (("lr_scheduler",), lambda v: v["lr_scheduler"] == "cosine_with_restarts"),
    "lr_scheduler_power": (("lr_scheduler",), lambda v: v["lr_scheduler"] == "polynomial"),
    "template_set": (("caption_source",), lambda v: v["caption_source"] != "captions"),
    "templates": (
        ("caption_source", "template_set"),
        lambda v: v["caption_source"] != "captions" and v["template_set"] == "custom",
    ),
    "early_stopping_min_delta": (("early_stopping_patience",), lambda v: _number(v["early_stopping_patience"]) > 0),
    "sample_prompts": (("sample_every_n_steps",), lambda v: _number(v["sample_every_n_steps"]) > 0),
    "sample_seed": (("sample_every_n_steps",), lambda v: _number(v["sample_every_n_steps"]) > 0),
    "sample_steps": (("sample_every_n_steps",), lambda v: _number(v["sample_every_n_steps"]) > 0),
    "huber_c": (("loss_type",), lambda v: v["loss_type"] in ("huber", "smooth_l1")),
    "huber_schedule": (("loss_type",), lambda v: v["loss_type"] in ("huber", "smooth_l1")),
    "multires_noise_discount": (
        ("multires_noise_iterations",),
        lambda v: _number(v["multires_noise_iterations"]) > 0,
    ),
    "ip_noise_gamma_random_strength": (("ip_noise_gamma",), lambda v: _number(v["ip_noise_gamma"]) > 0),
}


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def visibility(values: dict[str, Any]) -> dict[str, bool]:
    """Which conditional fields apply to these form values (the others are hidden, their values kept)."""
    return {key: bool(applies(values)) for key, (_, applies) in CONDITIONS.items()}


def label_of(key: str) -> str:
    """The tab's name for a config key, without the hint in parentheses."""
    spec = next((f for f in FIELDS if f.key == key), None)
    return re.sub(r"\s*\(.*?\)", "", spec.label).strip() if spec else key


def with_labels(message: str) -> str:
    """A message about config keys, worded with the tab's labels (the API keeps the keys)."""
    keys = sorted((f.key for f in FIELDS), key=len, reverse=True)
    spaced = [k for k in keys if "_" in k]  # such names never occur as ordinary words
    plain = [k for k in keys if "_" not in k]
    message = re.sub(
        r"(?<![\w'])(" + "|".join(map(re.escape, spaced)) + r")(?![\w'])", lambda m: label_of(m[1]), message
    )
    return re.sub(
        r"^(" + "|".join(map(re.escape, plain)) + r")(?=[\[: ])", lambda m: label_of(m[1]), message, flags=re.M
    )


def stages_to_text(stages: list[Stage]) -> str:
    return "\n".join(f"{s.step}: " + " | ".join(s.templates) for s in stages)


def stages_from_text(text: str) -> list[dict[str, Any]]:
    stages = []
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        match = re.match(r"^\s*(\d+)\s*:\s*(.+)$", line)
        if not match:
            raise ConfigError([f"stages line {number}: write it as 'STEP: template | template', got {line!r}"])
        stages.append(
            {"step": int(match.group(1)), "templates": [t.strip() for t in match.group(2).split("|") if t.strip()]}
        )
    return stages


def values_to_dict(values: list[Any] | tuple[Any, ...]) -> dict[str, Any]:
    """The form's values, in FIELDS order, as a kohya-style config dict (ready for parse_config)."""
    data: dict[str, Any] = {}
    for spec, value in zip(FIELDS, values):
        if spec.kind == "stages":
            data[spec.key] = stages_from_text(value or "")
        elif spec.kind == "lines":
            data[spec.key] = value or ""
        elif spec.kind in ("int", "slider") and isinstance(value, float) and value.is_integer():
            data[spec.key] = int(value)
        else:
            data[spec.key] = value
    return data


def config_to_values(config: TrainConfig) -> list[Any]:
    """The form's values for a config (after loading a file)."""
    out = []
    for spec in FIELDS:
        value = getattr(config, spec.key)
        if spec.kind == "stages":
            value = stages_to_text(value)
        elif spec.kind == "lines":
            value = "\n".join(value)
        out.append(value)
    return out
