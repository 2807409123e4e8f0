"""Training jobs: one at a time, each with a state the tab and the API can read while it runs.

The host (the WebUI, or a test) supplies the GPU lock, the folders and the progress display through ``Host``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ContextManager, Protocol

from lib_ti.training.config import ParsedConfig, TrainConfig, parse_config
from lib_ti.training.kohya import resolve_length
from lib_ti.training.layout import bucket_multiple, dataset_specs, plan_dataset
from lib_ti.errors import ConfigError, UserError
from lib_ti.training.model import ModelAdapter, init_vectors
from lib_ti.training.paths import plan_paths, run_dir_for
from lib_ti.training.run_state import STATE_SUFFIX, describe, read_run_state
from lib_ti.training.trainer import Services, StepRecord, train

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")


class Busy(UserError):
    """A job is already queued or running."""


class Host(Protocol):
    def embeddings_dir(self) -> str: ...
    def run_root(self) -> str: ...
    def existing_names(self) -> set[str]: ...
    def gpu_lock(self) -> ContextManager[None]: ...
    def begin(self, job: "Job") -> None: ...
    def progress(self, job: "Job", record: StepRecord) -> None: ...
    def preview(self, job: "Job", images: list) -> None: ...
    def should_stop(self) -> bool: ...
    def end(self, job: "Job") -> None: ...


@dataclass
class Job:
    id: str
    config: dict[str, Any]
    state: str = "queued"
    step: int = 0
    max_steps: int = 0
    loss: float | None = None
    lr: float | None = None
    eta: float | None = None
    files: list[str] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    losses: list[list[float]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    error: str = ""
    final_path: str = ""
    created: float = field(default_factory=time.time)
    finished: float | None = None
    interrupt_requested: bool = False
    run_dir: str = ""
    resumable: bool = False  # interrupted or failed with a checkpoint: one action continues it

    def to_dict(self, losses: bool = True) -> dict[str, Any]:
        """The job as the API and the tab show it: still running until the host has finished with it too
        (checking the weights, the grid after training), so a caller that waits for the end sees all of it."""
        data = asdict(self)
        if data["state"] not in ACTIVE and self.finished is None:
            data["state"] = "running"
        if not losses:
            data.pop("losses")
        return data


def ordinary_word_note(token: str, token_ids: list[int]) -> str:
    """A warning when the token is one word the tokenizer already knows: it means something to the model."""
    if len(token_ids) != 1:
        return ""
    return (
        f"The token {token!r} is an ordinary word the model already knows (one token of its vocabulary): "
        "the embedding replaces that word in every prompt, and its usual meaning pulls on what is learned. "
        "A made-up word (e.g. 'mystyle', 'zkw-cat') is safer."
    )


def preflight(parsed: ParsedConfig, adapter: ModelAdapter, host: Host) -> list[str]:
    """The checks that need the model and the disk, all done before a job is accepted, so the answer is immediate.

    Every problem is collected, so one answer lists them all; raises ConfigError.
    """
    config = parsed.config
    problems: list[str] = []
    found: dict[str, Any] = {}

    def dataset() -> None:
        specs, found["notes"] = dataset_specs(config, config.resolution or adapter.native_resolution)
        found["length"] = resolve_length(config, plan_dataset(specs, bucket_multiple(adapter.native_resolution)))

    for check in (
        dataset,
        lambda: plan_paths(config, host.embeddings_dir(), host.run_root(), host.existing_names()),
        # an init word that tokenises to nothing is refused now, not after the dataset loads
        lambda: None if config.weights else init_vectors(adapter, config.init_word, config.num_vectors_per_token),
    ):
        try:
            check()
        except ConfigError as e:
            problems += e.problems
        except UserError as e:
            problems.append(str(e))
    if problems:
        raise ConfigError(problems)
    notes = parsed.messages() + found["notes"] + [f"Length: {found['length'].explanation}"]
    word = ordinary_word_note(config.token_string, adapter.token_ids(config.token_string))
    if word:
        notes.append(word)
    if config.output_name and config.output_name != config.token_string:
        notes.append(
            f"The file is named {config.output_name!r}: in the WebUI you type '{config.output_name}' in prompts."
        )
    return notes


def check_all(data: dict[str, Any], adapter_factory: Callable[[], ModelAdapter], host: Host) -> tuple:
    """Parse and preflight in one go: settings problems and folder/name problems come back together."""
    try:
        parsed = parse_config(data)
    except ConfigError as e:
        problems = list(e.problems)
        folder = os.path.expanduser(str(data.get("train_data_dir") or "").strip())
        if folder and not os.path.isdir(folder):  # the folder is checked even when other settings are wrong
            problems.append(f"train_data_dir {folder!r} is not a folder. Give the folder that holds your images.")
        raise ConfigError(problems) from None
    adapter = adapter_factory()
    return parsed, adapter, preflight(parsed, adapter, host)


class JobManager:
    """Holds every job of this session; refuses a second one while one is queued or running."""

    def __init__(self):
        self._lock = threading.RLock()
        self.jobs: dict[str, Job] = {}

    def current(self) -> Job | None:
        with self._lock:
            active = [j for j in self.jobs.values() if j.state in ACTIVE]
            return active[0] if active else (max(self.jobs.values(), key=lambda j: j.created) if self.jobs else None)

    def ensure_idle(self) -> None:
        """Raise Busy while a job is queued or running: asked before any check touches the model or the disk."""
        with self._lock:
            for job in self.jobs.values():
                if job.state in ACTIVE:
                    raise Busy(
                        f"A training job ({job.id}, '{job.config.get('token_string')}') is already {job.state}; "
                        "wait for it to finish or interrupt it."
                    )

    def create(self, config: TrainConfig) -> Job:
        with self._lock:
            self.ensure_idle()
            job = Job(id=uuid.uuid4().hex[:12], config=config.to_dict(), max_steps=config.max_train_steps)
            self.jobs[job.id] = job
            return job

    def run_dirs(self) -> list[str]:
        """The run folders of this session's jobs (a run outside the run root is still found to continue it)."""
        with self._lock:
            return sorted({job.run_dir for job in self.jobs.values() if job.run_dir})

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def interrupt(self, job: Job, host_interrupt: Callable[[], None]) -> None:
        job.interrupt_requested = True
        if job.state == "running":
            host_interrupt()

    def run(
        self,
        job: Job,
        config: TrainConfig,
        adapter_factory: Callable[[], ModelAdapter],
        host: Host,
        lock: ContextManager[None] | None = None,
    ) -> Job:
        """Run the job to its end in this thread; every failure becomes the job's state and message."""
        with lock if lock is not None else host.gpu_lock():
            if job.interrupt_requested:
                job.state, job.error, job.finished = "interrupted", "Interrupted before it started.", time.time()
                return job
            job.state = "running"
            job.run_dir = run_dir_for(config, host.run_root())
            try:
                host.begin(job)
                result = train(
                    config,
                    adapter_factory(),
                    host.embeddings_dir(),
                    host.run_root(),
                    _services(job, host),
                    host.existing_names(),
                )
                job.state, job.step, job.final_path = result.state, result.step, result.final_path
                job.files = result.files
                if result.state == "failed":
                    job.error = result.message
            except UserError as e:
                job.state, job.error = "failed", str(e)
            except Exception as e:  # anything else is a bug or the machine; the user still gets a sentence
                log.exception("TI Trainer: training failed")
                job.state, job.error = "failed", f"Training failed: {type(e).__name__}: {e}"
            finally:
                try:
                    _offer_continue(job, config)
                    host.end(job)
                finally:
                    job.finished = time.time()
        return job

    def start(self, job: Job, config: TrainConfig, adapter_factory: Callable[[], ModelAdapter], host: Host) -> None:
        """Run in a background thread (the API answers at once with the job id)."""
        thread = threading.Thread(
            target=self.run, args=(job, config, adapter_factory, host), name=f"ti-trainer-{job.id}", daemon=True
        )
        thread.start()


def _offer_continue(job: Job, config: TrainConfig) -> None:
    """An interrupted or failed run that saved a checkpoint says so, and how to continue it."""
    if job.state not in ("interrupted", "failed") or not job.run_dir:
        return
    record = read_run_state(os.path.join(job.run_dir, config.name + STATE_SUFFIX))
    described = describe(record) if record is not None else None
    if described and described["resumable"]:
        job.resumable = True
        job.messages.append(
            f"It can go on from its checkpoint at step {described['checkpoint_step']} (with its optimizer state): "
            "'Continue' in the tab's Interrupted runs, or POST /ti-trainer/v1/runs/continue."
        )


def _services(job: Job, host: Host) -> Services:
    def progress(record: StepRecord) -> None:
        job.step, job.loss, job.lr, job.eta = record.step, record.loss, record.lr, record.eta
        job.max_steps = record.max_steps  # counted from epochs once the dataset is read (kohya configs)
        job.losses.append([record.step, record.loss])
        host.progress(job, record)

    def samples(step: int, images: list, paths: list[str]) -> None:
        job.samples.extend(paths)
        host.preview(job, images)

    def should_stop() -> bool:
        return job.interrupt_requested or host.should_stop()

    def message(text: str) -> None:
        """The checks before the job read the dataset too: what they said already is not said again."""
        if text not in job.messages:
            job.messages.append(text)

    return Services(
        progress=progress,
        should_stop=should_stop,
        message=message,
        samples=samples,
    )


@contextlib.contextmanager
def no_lock():
    yield
