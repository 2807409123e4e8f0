"""The batch queue: many concepts from one base config, trained one after another.

Entries come from a list of configs, or from a parent folder whose subfolders are datasets (each may hold a
``ti_trainer.json`` that overrides the base config; the token defaults to the folder's name). A failed or invalid
entry is reported and the rest go on. The queue is kept on disk, so a restart shows it as it was.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

from lib_ti.training.config import parse_config
from lib_ti.training.dataset import IMAGE_EXTENSIONS
from lib_ti.training.paths import run_dir_for
from lib_ti.training.run_state import STATE_SUFFIX, continue_config, describe, read_run_state
from lib_ti.embeddings.files import atomic_write_bytes
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
    resume: bool = False  # continue from the run's last checkpoint when it runs next


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
    """Entries run in order in one background thread, each as a normal training job of the JobManager.

    With a ``store`` file the entries are kept on disk (rewritten atomically at every change) and read back at
    start-up: done ones stay done, the one that was training is interrupted and resumable, and waiting ones wait
    for :meth:`resume` — nothing starts training by surprise. An interrupted entry (Interrupt, Reload UI) pauses the
    queue the same way; resuming continues it from its last checkpoint first.
    """

    def __init__(
        self,
        manager: JobManager,
        run_job: Callable[[Job, Any], None],
        run_grid: Callable[[Entry], list[str]] | None = None,
        poll: float = 1.0,
        store: str = "",
        continue_config: Callable[[Entry], dict[str, Any] | None] | None = None,
        resume_step: Callable[[Entry], int | None] | None = None,
    ):
        self.manager, self.run_job, self.run_grid, self.poll = manager, run_job, run_grid, poll
        self.store, self.continue_config, self.resume_step = store, continue_config, resume_step
        self.entries: list[Entry] = []
        self.paused = False
        self.notice = ""
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        if store:
            self._restore()

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
            self._save()
            self._start()
        return added

    def resume(self) -> int:
        """Go on: interrupted entries continue from their last checkpoint, then the waiting ones. Their count."""
        with self._lock:
            self.paused, self.notice = False, ""
            for entry in self.entries:
                if entry.state == "interrupted":
                    entry.state, entry.resume = "queued", True
            self._save()
            self._start()
            return sum(e.state == "queued" for e in self.entries)

    def pause(self) -> None:
        """Stop after the entry that is training now (which goes on to its end)."""
        with self._lock:
            self.paused, self.notice = True, "Paused: the queue stops after the entry training now."
            self._save()

    def status(self) -> dict[str, Any]:
        return {"entries": self.snapshot(), "paused": self.paused, "notice": self.notice}

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            for entry in self.entries:
                job = self.manager.get(entry.job_id) if entry.job_id else None
                if job is not None and entry.state == "running":
                    entry.step = job.step
            return [asdict(e) for e in self.entries]

    def _start(self) -> None:
        if not self.paused and (self._thread is None or not self._thread.is_alive()):
            self._thread = threading.Thread(target=self._work, name="ti-trainer-queue", daemon=True)
            self._thread.start()

    def _next(self) -> Entry | None:
        with self._lock:
            if self.paused:
                return None
            return next((e for e in self.entries if e.state == "queued"), None)

    def _work(self) -> None:
        while (entry := self._next()) is not None:
            try:
                config = self._config_for(entry)
                parsed = parse_config(config)
                job = self._create(parsed.config)
                if job is None:  # paused while waiting for another job
                    return
                entry.state, entry.job_id, entry.error = "running", job.id, ""
                self._save()
                self.run_job(job, parsed)
                entry.state, entry.step, entry.error, entry.final_path = job.state, job.step, job.error, job.final_path
                if job.state == "interrupted":
                    self._paused_by(entry)
                entry.resume = job.state == "interrupted"
                if entry.grid and job.state == "done" and self.run_grid is not None:
                    entry.grid_paths = self.run_grid(entry)
            except UserError as e:
                entry.state, entry.error = "failed", str(e)
            except Exception as e:  # one bad entry must not stop the others
                log.exception("TI Trainer: queue entry %s failed", entry.label)
                entry.state, entry.error = "failed", f"{type(e).__name__}: {e}"
            self._save()

    def _config_for(self, entry: Entry) -> dict[str, Any]:
        """An entry that was interrupted goes on from its last checkpoint (when it saved one)."""
        if entry.resume and self.continue_config is not None:
            return self.continue_config(entry) or entry.config
        return entry.config

    def _paused_by(self, entry: Entry) -> None:
        with self._lock:
            self.paused = True
            self.notice = (
                f"Paused: {entry.label!r} was interrupted at step {entry.step}. Resume the queue to continue it "
                "from its last checkpoint, then the entries still waiting."
            )

    def _create(self, config) -> Job | None:
        while True:  # another job (from the tab or the API) may be running: wait our turn
            try:
                return self.manager.create(config)
            except Busy:
                if self.paused:
                    return None
                time.sleep(self.poll)

    def _save(self) -> None:
        if not self.store:
            return
        with self._lock:
            data = {"version": 1, "paused": self.paused, "entries": [asdict(e) for e in self.entries]}
        try:
            atomic_write_bytes(self.store, json.dumps(data, indent=1).encode("utf-8"))
        except UserError as e:  # the queue goes on in memory; the console says why it is not kept
            log.warning("TI Trainer: the queue could not be saved: %s", e)

    def _restore(self) -> None:
        """Read the queue back after a restart: the running entry was cut off, the waiting ones wait."""
        self.entries, problem = read_queue_file(self.store)
        if problem:
            self.notice = problem
        cut = 0
        for entry in self.entries:
            if entry.state == "running":
                entry.state, entry.resume, cut = "interrupted", True, cut + 1
                entry.error = "The WebUI stopped while this entry was training; resume the queue to continue it"
                entry.error += self._from_where(entry) + "."
        waiting = sum(e.state in ("queued", "interrupted") for e in self.entries)
        if waiting:
            self.paused = True
            self.notice = (
                f"{waiting} entr{'y' if waiting == 1 else 'ies'} from before the restart "
                f"{'is' if waiting == 1 else 'are'} waiting"
                + (" (one was cut off while training)" if cut else "")
                + ": press Resume queue to go on."
            )
        if self.entries:
            self._save()

    def _from_where(self, entry: Entry) -> str:
        """Where continuing starts, which is also the step the entry shows: the queue file has the last step
        it saw, but training goes on from the run's last checkpoint."""
        try:
            step = self.resume_step(entry) if self.resume_step is not None else None
        except UserError:  # e.g. finished outside the queue: said when it is resumed
            step = None
        if step is None:
            return " from its last checkpoint"
        entry.step = step
        return f" from its checkpoint at step {step}" if step else " from the start (it saved no checkpoint)"


def read_queue_file(path: str) -> tuple[list[Entry], str]:
    """The saved entries, or none and a sentence when the file is damaged (it is kept aside, not overwritten)."""
    if not os.path.isfile(path):
        return [], ""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        known = {f.name for f in fields(Entry)}
        return [Entry(**{k: v for k, v in e.items() if k in known}) for e in data["entries"]], ""
    except (OSError, ValueError, TypeError, KeyError) as e:
        aside = f"{path}.damaged-{int(time.time())}"
        try:
            os.replace(path, aside)
        except OSError:
            aside = path
        log.warning("TI Trainer: the saved queue %s could not be read: %s", path, e)
        return [], f"The saved queue could not be read ({type(e).__name__}); it was kept as {aside}."


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


def _entry_run(entry: Entry, run_root: str):
    """The entry's run record and how it stands (None, None when it never started); a run finished outside
    the queue is refused."""
    config = parse_config(entry.config).config
    record = read_run_state(os.path.join(run_dir_for(config, run_root), config.name + STATE_SUFFIX))
    described = describe(record) if record is not None else None
    if described and described["state"] == "done":
        raise UserError(f"The run {config.name!r} was finished outside the queue (step {described['step']}).")
    return record, described


def continue_from_checkpoint(run_root: Callable[[], str]) -> Callable[[Entry], dict[str, Any] | None]:
    """For an interrupted entry: its run's config from the last checkpoint, or None to start it again."""

    def config_for(entry: Entry) -> dict[str, Any] | None:
        record, described = _entry_run(entry, run_root())
        if not described or not described["resumable"]:
            return None
        return continue_config(record)

    return config_for


def resume_step_of(run_root: Callable[[], str]) -> Callable[[Entry], int]:
    """For an interrupted entry: the step continuing it starts from (0: it starts again)."""

    def step_of(entry: Entry) -> int:
        _, described = _entry_run(entry, run_root())
        return described["checkpoint_step"] if described and described["resumable"] else 0

    return step_of


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
