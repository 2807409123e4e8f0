"""The training settings: one validated object built from a kohya-style JSON dict or the tab's values.

Users bring configs from kohya's scripts and the kohya_ss GUI, so their key names are accepted as aliases;
keys we understand but cannot use are reported with the reason, and unknown keys are listed back.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any

from lib_ti.training.captions import check_templates
from lib_ti.errors import ConfigError
from lib_ti.training.kohya import ALIASES, IGNORED, TEMPLATE_CHOICES, normalise_kohya, parse_resolution, validate_kohya
from lib_ti.training.schedule import parse_lr_schedule

MIXED_PRECISION = ("no", "fp16", "bf16")
CAPTION_SOURCES = ("captions", "templates", "both")
TEMPLATE_SETS = ("style", "object", "custom")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
OPTIMIZERS = ("AdamW", "AdamW8bit")
SAVE_FORMATS = ("safetensors", "pt")
MAX_VECTORS = 75
TOKEN_PATTERN = re.compile(r"^[\w.\-]+$")
PATH_KEYS = ("train_data_dir", "output_dir", "weights")


@dataclass
class Stage:
    """From ``step`` on, captions come from these template lines (placeholders as in ``templates``)."""

    step: int
    templates: list[str]


@dataclass
class TrainConfig:
    """Every setting a run needs; defaults follow the WebUI's own trainer where one exists."""

    train_data_dir: str = ""
    token_string: str = ""
    init_word: str = "*"
    num_vectors_per_token: int = 1
    output_name: str = ""
    output_dir: str = ""
    model_name_or_path: str = ""
    learning_rate: str = "0.005"
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    lr_scheduler_num_cycles: int = 1
    lr_scheduler_power: float = 1.0
    optimizer: str = "AdamW"
    use_8bit_adam: bool = False
    train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_train_steps: int = 1000
    save_every_n_steps: int = 100
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    seed: int = -1
    resolution: int = 0
    flip_aug: bool = False
    enable_bucket: bool = False
    caption_source: str = "both"
    caption_extension: str = ".txt"
    template_set: str = "style"
    templates: list[str] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    noise_offset: float = 0.0
    # kohya's dataset, length and loop options (lib_ti/training/kohya.py, layout.py, noise.py, loss.py)
    dataset_config: str = ""
    max_train_epochs: int = 0
    epoch: int = 0
    save_every_n_epochs: int = 0
    sample_every_n_epochs: int = 0
    keep_tokens: int = 0
    shuffle_caption: bool = False
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False
    noise_offset_type: str = "Original"
    noise_offset_random_strength: bool = False
    adaptive_noise_scale: float = 0.0
    multires_noise_iterations: int = 0
    multires_noise_discount: float = 0.3
    ip_noise_gamma: float = 0.0
    ip_noise_gamma_random_strength: bool = False
    min_timestep: int = 0
    max_timestep: int = 1000
    min_snr_gamma: float = 0.0
    loss_type: str = "l2"
    huber_c: float = 0.1
    huber_schedule: str = "snr"
    scale_v_pred_loss_like_noise_pred: bool = False
    v_pred_like_loss: float = 0.0
    lr_warmup: float = 0.0  # the kohya_ss GUI's warmup in % of the steps, resolved once the steps are known
    early_stopping_patience: int = 0
    early_stopping_min_delta: float = 0.001
    offload_vae: bool = False
    sample_every_n_steps: int = 100  # previews on: they show what each checkpoint learned
    sample_prompts: list[str] = field(default_factory=list)
    sample_seed: int = 1234
    sample_steps: int = 20
    save_model_as: str = "safetensors"
    weights: str = ""
    overwrite: bool = False

    @property
    def name(self) -> str:
        """The embedding's file name stem; the token is what users type in prompts."""
        return self.output_name or self.token_string

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ParsedConfig:
    """A config and what the user should be told about how their keys were read."""

    config: TrainConfig
    unknown_keys: list[str]
    ignored_keys: dict[str, str]
    notes: list[str]

    def messages(self) -> list[str]:
        out = list(self.notes)
        for key, why in self.ignored_keys.items():
            out.append(f"'{key}' has no effect here: {why}.")
        if self.unknown_keys:
            out.append("Unknown keys (not used): " + ", ".join(self.unknown_keys))
        return out


def _as_bool(key: str, value: Any, problems: list[str]) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0", "on", "off", ""):
        return value.strip().lower() in ("true", "yes", "1", "on")
    problems.append(f"{key}: expected true or false, got {value!r}")
    return False


def _as_int(key: str, value: Any, problems: list[str]) -> int:
    if isinstance(value, bool):
        problems.append(f"{key}: expected a whole number, got {value!r}")
        return 0
    try:
        number = float(value) if isinstance(value, str) else value
        if isinstance(number, float) and number.is_integer():
            return int(number)
        if isinstance(number, int):
            return number
    except (TypeError, ValueError):
        pass
    problems.append(f"{key}: expected a whole number, got {value!r}")
    return 0


def _as_float(key: str, value: Any, problems: list[str]) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        problems.append(f"{key}: expected a number, got {value!r}")
        return 0.0


def _as_lines(value: Any) -> list[str]:
    if isinstance(value, str):
        items = value.splitlines()
    elif isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        items = [str(value)]
    return [line.strip() for line in items if line.strip() and not line.strip().startswith("#")]


def _is_blank(key: str, value: Any) -> bool:
    kind = {f.name: f.type for f in dataclasses.fields(TrainConfig)}[key]
    return value is None or (kind in ("int", "float") and isinstance(value, str) and not value.strip())


def _coerce(key: str, value: Any, problems: list[str]) -> Any:
    kind = {f.name: f.type for f in dataclasses.fields(TrainConfig)}[key]
    if kind == "bool":
        return _as_bool(key, value, problems)
    if kind == "int":
        return _as_int(key, value, problems)
    if kind == "float":
        return _as_float(key, value, problems)
    if kind == "list[str]":
        return _as_lines(value)
    if key == "learning_rate":
        return str(value).strip() if value is not None else ""
    if key in PATH_KEYS:  # "~/data" is how users write their home folder; the WebUI's process would not expand it
        return "" if value is None else os.path.expanduser(str(value).strip())
    return "" if value is None else str(value).strip()


def _read_special(key: str, value: Any, values: dict[str, Any], notes: list[str], problems: list[str]) -> bool:
    """Keys whose meaning needs translating; returns True when handled."""
    if key == "template":
        choice = TEMPLATE_CHOICES.get(str(value).strip().lower())
        if choice is None:
            problems.append(f"template: expected caption, object template or style template, got {value!r}")
        else:
            values["caption_source"] = choice[0]
            if choice[1]:
                values["template_set"] = choice[1]
        return True
    if key in ("max_resolution", "resolution") and not isinstance(value, int):
        try:
            sizes = set(parse_resolution(value))
        except ValueError:
            problems.append(f"{key}: expected a size like 512 or '512,768', got {value!r}")
            return True
        if len(sizes) > 1:
            notes.append(f"{key} {value!r}: training uses square {max(sizes)} px (buckets keep aspect).")
        values["resolution"] = max(sizes) if sizes else 0
        return True
    if key == "stages":
        values["stages"] = value
        return True
    if key == "sample_prompts":
        values["sample_prompts"] = _as_lines(value)  # kohya's options (--n, --w, ...) are read when sampling
        return True
    if key == "save_model_as":
        fmt = str(value).strip().lower().lstrip(".")
        if fmt in ("ckpt", "bin"):
            notes.append(f"save_model_as {value!r}: saved as .pt, the WebUI's pickle format.")
            fmt = "pt"
        values["save_model_as"] = fmt
        return True
    return False


def parse_config(data: dict[str, Any], sd_scripts: bool = False) -> ParsedConfig:
    """Read a kohya-style dict: aliases mapped, types coerced, unknown keys listed. Validates too.
    ``sd_scripts``: the dict is an sd-scripts config file, whose defaults apply to missing keys."""
    if not isinstance(data, dict):
        raise ConfigError(["the config must be a JSON object of key: value pairs"])
    data, notes = normalise_kohya(data, sd_scripts)
    known = {f.name for f in dataclasses.fields(TrainConfig)} - {"stages"}
    values: dict[str, Any] = {}
    problems: list[str] = []
    unknown: list[str] = []
    unreadable: list[str] = []
    ignored: dict[str, str] = {}
    for raw_key, value in data.items():
        key = ALIASES.get(raw_key, raw_key)
        if _read_special(key, value, values, notes, problems):
            continue
        if key in known and _is_blank(key, value):
            continue  # the kohya_ss GUI saves an empty number box as "": the default applies
        if key in known:
            before = len(problems)
            coerced = _coerce(key, value, problems)
            if len(problems) == before:
                values[key] = coerced
            else:  # a value of the wrong type leaves the default, so the rest is checked too
                unreadable.append(key)
        elif key in IGNORED:
            ignored[raw_key] = IGNORED[key]
        else:
            unknown.append(raw_key)
    stages = _parse_stages(values.pop("stages", []), problems)
    if problems:  # every problem at once: the values that did read are still checked
        try:
            validate(TrainConfig(**values, stages=stages))
        except ConfigError as e:  # not again for a key already named, whose default was checked in its place
            problems += [p for p in e.problems if p not in problems and not p.startswith(tuple(unreadable))]
        raise ConfigError(problems)
    config = TrainConfig(**values, stages=stages)
    if values.get("lr_warmup_steps"):
        config.lr_warmup = 0.0  # an absolute warmup wins over the GUI's percentage, as in the kohya_ss GUI
    elif config.lr_warmup and config.max_train_steps and not config.max_train_epochs:
        config.lr_warmup_steps = int(config.max_train_steps * config.lr_warmup / 100)
        notes.append(
            f"lr_warmup {config.lr_warmup:g}% of {config.max_train_steps} steps = {config.lr_warmup_steps} steps."
        )
        config.lr_warmup = 0.0
    if config.optimizer.lower() in ("adamw8bit", "adamw_8bit"):
        config.optimizer, config.use_8bit_adam = "AdamW", True
    validate(config)
    return ParsedConfig(config, unknown, ignored, notes)


def _parse_stages(raw: Any, problems: list[str]) -> list[Stage]:
    if not raw:
        return []
    if not isinstance(raw, list):
        problems.append('stages: expected a list of {"step": N, "templates": [...]}')
        return []
    stages = []
    for i, item in enumerate(raw):
        if isinstance(item, Stage):
            stages.append(item)
            continue
        if not isinstance(item, dict) or "step" not in item or "templates" not in item:
            problems.append(f'stages[{i}]: expected {{"step": N, "templates": [...]}}, got {item!r}')
            continue
        stages.append(Stage(_as_int(f"stages[{i}].step", item["step"], problems), _as_lines(item["templates"])))
    return sorted(stages, key=lambda s: s.step)


def validate_token(token: str) -> str | None:
    """Why this token cannot be typed in a WebUI prompt, or None when it can."""
    if not token:
        return "token_string is empty: it is the word you will type in prompts, e.g. 'mystyle'"
    if any(ch.isspace() for ch in token):
        return f"token_string {token!r} contains spaces: the WebUI finds embeddings by a single word"
    if not TOKEN_PATTERN.match(token):
        bad = sorted({ch for ch in token if not re.match(r"[\w.\-]", ch)})
        return (
            f"token_string {token!r} contains {' '.join(bad)}, which the prompt parser treats specially; "
            "use letters, digits, '_', '-' or '.'"
        )
    if len(token) > 64:
        return "token_string is longer than 64 characters"
    return None


def validate(config: TrainConfig) -> None:
    """Check every value; raise ConfigError naming each bad key and why."""
    problems: list[str] = []
    token_problem = validate_token(config.token_string)
    if token_problem:
        problems.append(token_problem)
    if config.output_name and (validate_token(config.output_name) or os.sep in config.output_name):
        problems.append(f"output_name {config.output_name!r}: use letters, digits, '_', '-' or '.' (it names a file)")
    if not config.train_data_dir and not config.dataset_config:
        problems.append("train_data_dir is empty: give the folder that holds your images (or a dataset_config)")
    if not 1 <= config.num_vectors_per_token <= MAX_VECTORS:
        problems.append(f"num_vectors_per_token: must be 1 to {MAX_VECTORS}, got {config.num_vectors_per_token}")
    try:
        parse_lr_schedule(config.learning_rate, max(config.max_train_steps, 1))  # again once epochs are counted
    except ValueError as e:
        problems.append(f"learning_rate: {e}")
    problems += validate_kohya(config)
    for key in ("train_batch_size", "gradient_accumulation_steps", "sample_steps"):
        if getattr(config, key) <= 0:
            problems.append(f"{key}: must be positive, got {getattr(config, key)}")
    for key in (
        "save_every_n_steps",
        "sample_every_n_steps",
        "lr_warmup_steps",
        "resolution",
        "early_stopping_patience",
    ):
        if getattr(config, key) < 0:
            problems.append(f"{key}: must be 0 (off) or positive, got {getattr(config, key)}")
    if config.resolution and config.resolution % 8:
        problems.append(f"resolution: must be a multiple of 8, got {config.resolution}")
    for key, allowed in (
        ("mixed_precision", MIXED_PRECISION),
        ("caption_source", CAPTION_SOURCES),
        ("template_set", TEMPLATE_SETS),
        ("lr_scheduler", LR_SCHEDULERS),
        ("optimizer", OPTIMIZERS),
        ("save_model_as", SAVE_FORMATS),
    ):
        if getattr(config, key) not in allowed:
            problems.append(f"{key}: must be one of {', '.join(allowed)}; got {getattr(config, key)!r}")
    if config.template_set == "custom" and config.caption_source != "captions" and not config.templates:
        problems.append("templates: template_set is 'custom' but no template lines were given")
    if not 0 <= config.early_stopping_min_delta < 1:
        problems.append(f"early_stopping_min_delta: a fraction from 0 to 1, got {config.early_stopping_min_delta}")
    if not 0 <= config.noise_offset <= 1:
        problems.append(f"noise_offset: must be between 0 and 1, got {config.noise_offset}")
    if config.template_set == "custom":
        problems += check_templates(config.templates, "templates")
    for i, stage in enumerate(config.stages):
        if stage.step <= 0 or not stage.templates:
            problems.append(f"stages[{i}]: needs a step > 0 and at least one template line")
        problems += check_templates(stage.templates, f"stages[{i}]")
    if problems:
        raise ConfigError(problems)
