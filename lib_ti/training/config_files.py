"""Config files on disk: our JSON, the kohya_ss GUI's JSON and sd-scripts' ``--config_file`` TOML.

What the settings are and how a dict becomes them is ``config.py``; this is only where they are read from and
written to, with messages that name the file.
"""

from __future__ import annotations

import json
from typing import Any

from lib_ti.errors import ConfigError
from lib_ti.training.config import ParsedConfig, TrainConfig, parse_config


def load_config_file(path: str) -> ParsedConfig:
    """Read a JSON config (ours or the kohya_ss GUI's) or an sd-scripts ``--config_file`` TOML from disk, with a
    message that names the file when it cannot be read."""
    if path.lower().endswith(".toml"):
        from lib_ti.training.kohya_toml import read_config_file

        return parse_config(read_config_file(path), sd_scripts=True)
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError([f"config file {path!r} does not exist"]) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError([f"config file {path!r} is not valid JSON: {e}"]) from None
    return parse_config(data)


def config_to_json(config: TrainConfig) -> str:
    """The config as users share it: every key, stages as plain dicts."""
    return json.dumps(config.to_dict(), indent=2)


def save_config_file(config: TrainConfig, path: str, fmt: str = "", model: Any = None) -> list[str]:
    """``fmt`` "json" (ours), "kohya_gui" (the kohya_ss GUI's TI tab; ``model``: a kohya_gui.ModelInfo) or "toml"
    (sd-scripts' ``--config_file``); "" = by the name (.toml, else ours). Returns notes on what the target cannot
    take."""
    from lib_ti.embeddings.files import atomic_write_bytes

    if fmt == "toml" or (not fmt and path.lower().endswith(".toml")):
        from lib_ti.training.kohya_toml import save_kohya_config

        return save_kohya_config(config, path)
    if fmt == "kohya_gui":
        from lib_ti.training.kohya_gui import save_gui_config

        return save_gui_config(config, path, model)
    atomic_write_bytes(path, config_to_json(config).encode("utf-8"))
    return []
