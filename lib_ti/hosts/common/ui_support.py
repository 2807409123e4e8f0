"""What the tab asks of the WebUI beyond training, the same in both WebUIs: its samplers, whether 8-bit AdamW
exists, where a checkpoint's file is. (Usable embeddings come from each WebUI's embedding database.)"""

from __future__ import annotations

import importlib.util
import os

from modules import sd_models, sd_samplers, sd_schedulers


def sampler_names() -> list[str]:
    """The samplers txt2img offers, in its order."""
    return list(sd_samplers.visible_sampler_names())


def known_sampler(name: str) -> bool:
    """True when txt2img would use this sampler rather than silently falling back to its default.

    Accepts names, aliases and the older "<sampler> <scheduler>" spellings (e.g. "DPM++ 2M Karras").
    """
    name = (name or "").strip()
    for scheduler in sd_schedulers.schedulers:
        for option in (scheduler.label, scheduler.name, *(scheduler.aliases or [])):
            if name.endswith(" " + option):
                name = name[: -len(option) - 1]
                break
    return name in sd_samplers.all_samplers_map or name.lower() in sd_samplers.samplers_map


def bitsandbytes_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def checkpoint_path(name: str) -> str:
    """The file of the checkpoint the WebUI knows by this name (title, name, hash, or a file path); "" if none."""
    name = (name or "").strip()
    if name and os.path.isfile(name):
        return os.path.abspath(name)
    info = sd_models.get_closet_checkpoint_match(name) if name else None
    filename = getattr(info, "filename", "") or ""
    return os.path.abspath(filename) if filename and os.path.isfile(filename) else ""
