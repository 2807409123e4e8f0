"""The batch queue: many concepts from one base config, trained one after another.

Entries come from a list of configs, or from a parent folder whose subfolders are datasets (each may hold a
``ti_trainer.json`` that overrides the base config; the token defaults to the folder's name). A failed or invalid
entry is reported and the rest go on. The queue lives in the WebUI's process: it survives a page reload, and a
WebUI restart ends it (entries not yet run are lost; finished embeddings and checkpoints stay on disk).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from lib_ti.training.config import parse_config
from lib_ti.training.dataset import IMAGE_EXTENSIONS
from lib_ti.errors import UserError
from lib_ti.jobs.manager import Busy, Job, JobManager

log = logging.getLogger(__name__)
FOLDER_CONFIG = "ti_trainer.json"


@dataclass
class Entry:
    id: str
    label: str
    config: dict[str, Any]
    state: str = "queued"  # queued | running | done | failed | interrupted | invalid
    job_id: str = ""
    step: int = 0
    error: str = ""
    final_path: str = ""
    grid: bool = False
    grid_paths: list[str] = field(default_factory=list)


def _has_images(folder: str) -> bool:
    """Images in the folder, or in its subfolders (kohya's ``<repeats>_<name>`` layout)."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.lower().endswith(IMAGE_EXTENSIONS):
            return True
        if os.path.isdir(path) and any(f.lower().endswith(IMAGE_EXTENSIONS) for f in os.listdir(path)):
            return True
    return False


def folder_configs(parent: str, base: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, config) per subfolder holding images; its own ti_trainer.json overrides the base config."""
    parent = os.path.expanduser(parent)
    if not os.path.isdir(parent):
        raise UserError(f"{parent!r} is not a folder. Give the folder whose subfolders are your datasets.")
    out = []
    for name in sorted(os.listdir(parent)):
        folder = os.path.join(parent, name)
        if not os.path.isdir(folder) or name.startswith("."):
            continue
        if not _has_images(folder):  # listed as invalid, not dropped
            out.append((name, {"train_data_dir": folder, "_error": f"no images ({', '.join(IMAGE_EXTENSIONS)}) in it"}))
            continue
        config = {**base, "train_data_dir": folder}
        config.setdefault("token_string", re.sub(r"[^\w.\-]", "_", name))
        own = os.path.join(folder, FOLDER_CONFIG)
        if os.path.isfile(own):
            try:
                with open(own, encoding="utf-8-sig") as f:
                    config.update(json.load(f))
            except (OSError, ValueError) as e:
                config["_error"] = f"{FOLDER_CONFIG} is not valid JSON: {e}"
            config["train_data_dir"] = folder
        out.append((name, config))
    if not out:
        raise UserError(f"No subfolder in {parent!r}: put each dataset (its images) in its own subfolder.")
    return out


class BatchQueue:
    """Entries run in order in one background thread, each as a normal training job of the JobManager."""

    def __init__(
        self,
        manager: JobManager,
        run_job: Callable[[Job, Any], None],
        run_grid: Callable[[Entry], list[str]] | None = None,
        poll: float = 1.0,
    ):
        self.manager, self.run_job, self.run_grid, self.poll = manager, run_job, run_grid, poll
        self.entries: list[Entry] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, configs: list[tuple[str, dict[str, Any]]], grid: bool = False) -> list[Entry]:
        """Every config becomes an entry; invalid ones are kept with their message, so nothing is dropped."""
        added = []
        for label, config in configs:
            entry = Entry(uuid.uuid4().hex[:12], label, {k: v for k, v in config.items() if k != "_error"}, grid=grid)
            try:
                if "_error" in config:
                    raise UserError(config["_error"])
                parse_config(entry.config)
            except UserError as e:
                entry.state, entry.error = "invalid", str(e)
            added.append(entry)
        with self._lock:
            self.entries.extend(added)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="ti-trainer-queue", daemon=True)
                self._thread.start()
        return added

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            for entry in self.entries:
                job = self.manager.get(entry.job_id) if entry.job_id else None
                if job is not None and entry.state == "running":
                    entry.step = job.step
            return [asdict(e) for e in self.entries]

    def _next(self) -> Entry | None:
        with self._lock:
            return next((e for e in self.entries if e.state == "queued"), None)

    def _work(self) -> None:
        while (entry := self._next()) is not None:
            try:
                parsed = parse_config(entry.config)
                job = self._create(parsed.config)
                entry.state, entry.job_id = "running", job.id
                self.run_job(job, parsed)
                entry.state, entry.step, entry.error, entry.final_path = job.state, job.step, job.error, job.final_path
                if entry.grid and job.state == "done" and self.run_grid is not None:
                    entry.grid_paths = self.run_grid(entry)
            except UserError as e:
                entry.state, entry.error = "failed", str(e)
            except Exception as e:  # one bad entry must not stop the others
                log.exception("TI Trainer: queue entry %s failed", entry.label)
                entry.state, entry.error = "failed", f"{type(e).__name__}: {e}"

    def _create(self, config) -> Job:
        while True:  # another job (from the tab or the API) may be running: wait our turn
            try:
                return self.manager.create(config)
            except Busy:
                time.sleep(self.poll)


def job_runner(manager: JobManager, host, adapter_factory) -> Callable[[Job, Any], None]:
    """Run one queued job like the API does: checks first (a failure ends that job, not the queue), then train."""
    from lib_ti.jobs.manager import preflight

    def run(job: Job, parsed) -> None:
        try:
            adapter = adapter_factory()
            job.messages.extend(preflight(parsed, adapter, host))
        except UserError as e:
            job.state, job.error, job.finished = "failed", str(e), time.time()
            return
        manager.run(job, parsed.config, lambda: adapter, host)

    return run


def queue_request(body: dict[str, Any], queue: BatchQueue) -> list[Entry]:
    """The API's and the tab's way in: {"configs": [...]} or {"folder": ..., "base": {...}}, plus "grid"."""
    grid = bool(body.get("grid"))
    if body.get("folder"):
        return queue.add(folder_configs(str(body["folder"]), dict(body.get("base") or {})), grid)
    configs = body.get("configs")
    if not isinstance(configs, list) or not configs:
        raise UserError('Give "configs": [ {...}, ... ] or "folder": "/path/to/datasets" (with an optional "base").')
    labelled = []
    for i, config in enumerate(configs):
        if not isinstance(config, dict):
            labelled.append((f"#{i + 1}", {"_error": f"entry {i + 1} is not a JSON object"}))
        else:
            labelled.append((str(config.get("output_name") or config.get("token_string") or f"#{i + 1}"), config))
    return queue.add(labelled, grid)
