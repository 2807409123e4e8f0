"""AUTOMATIC1111 WebUI (v1.10): the adapters the library's core asks for, on ``modules``.

The names below are the whole surface the glue in ``scripts/`` uses; every WebUI package exports the same.
"""

from lib_ti.hosts.a1111.embedding_db import existing_embedding_names, reload_embeddings, resolve_prompt_aliases
from lib_ti.hosts.a1111.grid import grid_after_training, run_grid_queued, txt2img_defaults
from lib_ti.hosts.a1111.host import WebUIHost
from lib_ti.hosts.a1111.inspection import WebUIInspection
from lib_ti.hosts.a1111.model import WebUIModel
from lib_ti.hosts.a1111.ui_support import (
    bitsandbytes_available,
    known_sampler,
    sampler_names,
    usable_embedding_names,
)
from lib_ti.hosts.a1111.xyz import add_xyz_axes

NAME = "AUTOMATIC1111"

__all__ = [
    "NAME",
    "WebUIHost",
    "WebUIInspection",
    "WebUIModel",
    "add_xyz_axes",
    "bitsandbytes_available",
    "known_sampler",
    "sampler_names",
    "usable_embedding_names",
    "existing_embedding_names",
    "grid_after_training",
    "reload_embeddings",
    "resolve_prompt_aliases",
    "run_grid_queued",
    "txt2img_defaults",
]
