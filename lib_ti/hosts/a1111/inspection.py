"""What the inspector and converter need from the WebUI: the loaded model's token tables and embedding files."""

from __future__ import annotations

import os

from modules import sd_hijack, shared

from lib_ti.errors import UserError
from lib_ti.hosts.a1111.embedding_db import embeddings_dir, existing_embedding_names, reload_embeddings
from lib_ti.hosts.a1111.model import WebUIModel

class WebUIInspection:
    """What the inspector needs from the WebUI: the loaded model's token tables, embedding files, reloading."""

    def __init__(self, run_root: str):
        self.run_root = run_root

    def reference(self):
        from lib_ti.embeddings.inspector import Reference

        if shared.sd_model is None:
            return None
        model = WebUIModel()
        wrapper = next(iter(model.encoders.values()))[0]
        tokenizer = getattr(wrapper, "tokenizer", None) or getattr(wrapper.wrapped, "tokenizer", None)

        def spell(token_id: int) -> str:
            if hasattr(tokenizer, "convert_ids_to_tokens"):
                return str(tokenizer.convert_ids_to_tokens(token_id)).replace("</w>", "")
            decoder = getattr(tokenizer, "decoder", {})
            return str(decoder.get(token_id, token_id)).replace("</w>", "")

        tables = {key: layer.wrapped.weight.detach().float().cpu() for key, (_, layer) in model.encoders.items()}
        return Reference(model.family.upper(), tables, spell)

    def embedding_path(self, name: str) -> str:
        db = sd_hijack.model_hijack.embedding_db
        existing_embedding_names()
        record = db.word_embeddings.get(name) or db.skipped_embeddings.get(name)
        if record is None or not record.filename:
            raise UserError(f"Unknown embedding {name!r}.")
        return record.filename

    def run_dir(self, name: str) -> str:
        """The default run folder, for embeddings whose file does not record one."""
        return os.path.join(self.run_root, name)

    def embeddings_dir(self) -> str:
        return embeddings_dir()

    def after_convert(self) -> None:
        reload_embeddings()
