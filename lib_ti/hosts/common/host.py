"""``lib_ti.jobs.manager.Host`` on the WebUI: its GPU queue, folders, progress bar and Interrupt button."""

from __future__ import annotations

import contextlib
import os

from modules import shared

from lib_ti.errors import UserError
from lib_ti.hosts.common.grid import grid_after_training
from lib_ti.hosts.common.store import EmbeddingStore


class WebUIHost:
    """``lib_ti.jobs.manager.Host`` on the WebUI: its GPU queue, folders, progress bar and Interrupt button.

    ``owns_state`` is True for API jobs; the tab's jobs run inside ``wrap_gradio_gpu_call``, which already
    holds the queue lock and begins and ends ``shared.state``. Each WebUI package subclasses it with its
    embedding database (``store``) and its model adapter (``model_class``).
    """

    store: EmbeddingStore
    model_class: type

    def __init__(self, owns_state: bool):
        self.owns_state = owns_state

    def embeddings_dir(self) -> str:
        return self.store.embeddings_dir()

    def run_root(self) -> str:
        from modules import paths

        folder = shared.opts.data.get("ti_trainer_output_dir") or os.path.join("outputs", "ti-trainer")
        return folder if os.path.isabs(folder) else os.path.join(paths.data_path, folder)

    def existing_names(self) -> set[str]:
        return self.store.existing_embedding_names()

    def gpu_lock(self):
        from modules import call_queue

        return call_queue.queue_lock if self.owns_state else contextlib.nullcontext()

    def begin(self, job) -> None:
        if self.owns_state:
            shared.state.begin(job="ti-trainer")
        shared.state.job = "ti-trainer"
        shared.state.job_count = job.max_steps
        shared.state.textinfo = "Preparing the dataset…"
        self._digest = self.model_class().weights_digest() if shared.opts.data.get("ti_trainer_verify_model") else None

    def progress(self, job, record) -> None:
        shared.state.job_no, shared.state.job_count = record.step, record.max_steps
        shared.state.textinfo = f"Step {record.step}/{record.max_steps}, loss {record.loss:.4f}, lr {record.lr:.2e}"

    def preview(self, job, images: list) -> None:
        if images:
            shared.state.assign_current_image(images[0])

    def should_stop(self) -> bool:
        return bool(shared.state.interrupted)

    def end(self, job) -> None:
        # the embedding list was reloaded once already, by the model adapter as training ended (it put the token's
        # vectors there and only files are written inside training): reloading again would only re-read every file
        if getattr(self, "_digest", None) and shared.sd_model is not None:
            same = self.model_class().weights_digest() == self._digest
            job.messages.append(
                "Model weights verified unchanged." if same else "WARNING: the model's weights changed!"
            )
        if job.state == "done" and job.final_path and shared.opts.data.get("ti_trainer_grid_after_training"):
            self._grid_after(job)
        if self.owns_state:
            shared.state.end()

    def _grid_after(self, job) -> None:
        """The optional test grid when training ends, so it is there when the user returns."""
        try:
            paths = grid_after_training(
                self.store, job.final_path, self.run_root(), "", owns_state=False
            )  # our queue slot
            job.messages.append("Test grid saved: " + ", ".join(paths))
        except UserError as e:
            job.messages.append(f"No test grid: {e}")
