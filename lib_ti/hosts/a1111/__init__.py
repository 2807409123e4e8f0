"""AUTOMATIC1111 WebUI (v1.10): the adapters the library's core asks for, on ``modules``.

The names below are the whole surface the glue in ``scripts/`` uses; every WebUI package exports the same.
What differs from Forge lives here (the model adapter, the embedding database); the rest is in ``common``.
"""

from lib_ti.hosts.common.surface import bind
from lib_ti.hosts.common.txt2img import txt2img_defaults as txt2img_defaults
from lib_ti.hosts.common.ui_support import bitsandbytes_available as bitsandbytes_available
from lib_ti.hosts.common.ui_support import checkpoint_path as checkpoint_path
from lib_ti.hosts.common.ui_support import known_sampler as known_sampler
from lib_ti.hosts.common.ui_support import sampler_names as sampler_names
from lib_ti.hosts.a1111 import embedding_db
from lib_ti.hosts.a1111.embedding_db import existing_embedding_names as existing_embedding_names
from lib_ti.hosts.a1111.embedding_db import reload_embeddings as reload_embeddings
from lib_ti.hosts.a1111.embedding_db import resolve_prompt_aliases as resolve_prompt_aliases
from lib_ti.hosts.a1111.embedding_db import usable_embedding_names as usable_embedding_names
from lib_ti.hosts.a1111.model import WebUIModel

NAME = "AUTOMATIC1111"
WebUIHost, WebUIInspection, grid_after_training, run_grid_queued, add_xyz_axes = bind(embedding_db, WebUIModel)
