"""One adapter package per WebUI, chosen once at start-up by probing what is running.

The library's core never imports these; only ``scripts/`` does, through :func:`detect`.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType


def webui_kind() -> str:
    """'forge' when the running WebUI is Forge (its ``backend`` engine and ``modules_forge``), else 'a1111'."""
    if importlib.util.find_spec("modules_forge") is not None and importlib.util.find_spec("backend") is not None:
        return "forge"
    return "a1111"


def detect() -> ModuleType:
    """The adapter package for the running WebUI."""
    return importlib.import_module(f"lib_ti.hosts.{webui_kind()}")
