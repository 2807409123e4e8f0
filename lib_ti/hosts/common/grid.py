"""The test grid in the WebUI: every cell through its own txt2img, saved and labelled as txt2img saves them."""

from __future__ import annotations

import contextlib
import json
import os
from modules import shared

from lib_ti.hosts.common.store import EmbeddingStore
from lib_ti.hosts.common.txt2img import grid_font, render_cell, save_grid, txt2img_defaults
from lib_ti.hosts.script_args import default_script_args


def grid_after_training(
    store: EmbeddingStore, final_path: str, run_root: str, checkpoints: str, owns_state: bool
) -> list[str]:
    """A test grid of a freshly trained embedding: txt2img's settings, the default strengths and prompts."""
    from lib_ti.grid.run import GridRequest

    name = os.path.splitext(os.path.basename(final_path))[0]
    request = GridRequest.from_dict({"embedding": name, "checkpoints": checkpoints}, txt2img_defaults())
    return run_grid_queued(store, request, run_root, owns_state).paths


def _metadata(filename: str) -> dict:
    from lib_ti.embeddings.files import load_embedding

    return load_embedding(filename)[1] if filename and filename.endswith(".safetensors") else {}


def run_dir_of(store: EmbeddingStore, name: str, run_root: str, meta: dict | None = None) -> str:
    """Where the embedding's checkpoints are: recorded in its file, else the default run folder."""
    if meta is None:
        meta = _metadata(store.embedding_record(name).filename)
    return meta.get("ti_run_dir") or os.path.join(run_root, name)


class WebUIGridBackend:
    """``lib_ti.grid.run.GridBackend`` on the WebUI, with its embedding database behind ``store``."""

    def __init__(self, store: EmbeddingStore, run_root: str, should_stop=lambda: False):
        from modules import scripts

        self.store, self.run_root, self.stop_requested = store, run_root, should_stop
        self.script_args = default_script_args(scripts.scripts_txt2img)  # built once per runner, not per request

    def embedding(self, name: str):
        from lib_ti.grid.run import LoadedEmbedding

        record = self.store.embedding_record(name)
        meta = _metadata(record.filename)
        step = int(meta["step"]) if str(meta.get("step", "")).isdigit() else record.step
        run_dir = run_dir_of(self.store, name, self.run_root, meta)
        try:
            data_dir = json.loads(meta.get("ti_settings", "{}")).get("train_data_dir", "")
        except ValueError:
            data_dir = ""
        return LoadedEmbedding(name, record.vectors, record.filename, record.shorthash, step, run_dir, data_dir)

    def clip_scorer(self):
        """A CLIP model from the setting (a local folder or a Hugging Face id already downloaded), never fetched."""
        from lib_ti.grid.quality import TransformersClip

        source = shared.opts.data.get("ti_trainer_clip_model") or "openai/clip-vit-large-patch14"
        try:
            from transformers import CLIPModel, CLIPProcessor

            model = CLIPModel.from_pretrained(source, local_files_only=True)
            processor = CLIPProcessor.from_pretrained(source, local_files_only=True)
        except Exception as e:  # offline, missing weights, not a CLIP model: all mean "no scores", said plainly
            return None, (
                f"no CLIP model could be loaded from {source!r} without downloading ({type(e).__name__}). "
                "Set Settings → TI Trainer → CLIP model to a folder with a CLIP model."
            )
        return TransformersClip(model, processor), ""

    def render(self, prompt, gen, extra):
        return render_cell(prompt, gen, self.script_args, extra)

    def save_grid(self, image, seed, title, info):
        return save_grid(image, seed, title, info)

    def progress(self, done: int, total: int, text: str) -> None:
        shared.state.job_count = total
        shared.state.job_no = done
        shared.state.textinfo = text

    def should_stop(self) -> bool:
        return bool(shared.state.interrupted) or self.stop_requested()

    def font_path(self):
        return grid_font()


def run_grid_queued(store: EmbeddingStore, request, run_root: str, owns_state: bool, should_stop=lambda: False):
    """A grid through the WebUI's GPU queue (API calls) or inside the caller's queue slot (the tab)."""
    from modules import call_queue

    from lib_ti.grid.run import run_grid

    lock = call_queue.queue_lock if owns_state else contextlib.nullcontext()
    with lock:
        if owns_state:
            shared.state.begin(job="ti-trainer-grid")
        try:
            return run_grid(request, WebUIGridBackend(store, run_root, should_stop))
        finally:
            if owns_state:
                shared.state.end()
