"""What the inspector and converter need from the WebUI: the loaded model's token tables and embedding files."""

from __future__ import annotations

import os

from modules import shared

from lib_ti.hosts.common.store import EmbeddingStore


class WebUIInspection:
    """What the inspector needs from the WebUI: the loaded model's token tables, embedding files, reloading.

    The model adapter (``model_class``) gives the token tables and spells token ids; ``store`` is the WebUI's
    embedding database.
    """

    def __init__(self, run_root: str, store: EmbeddingStore, model_class: type):
        self.run_root, self.store, self.model_class = run_root, store, model_class

    def reference(self):
        from lib_ti.embeddings.inspector import Reference

        if shared.sd_model is None:
            return None
        model = self.model_class()
        return Reference(model.family.upper(), model.token_tables(), model.spell)

    def embedding_path(self, name: str) -> str:
        return self.store.embedding_file(name)

    def run_dir(self, name: str) -> str:
        """The default run folder, for embeddings whose file does not record one."""
        return os.path.join(self.run_root, name)

    def embeddings_dir(self) -> str:
        return self.store.embeddings_dir()

    def after_convert(self) -> None:
        self.store.reload_embeddings()
