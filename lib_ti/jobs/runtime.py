"""The jobs, the API's host and the batch queue of this WebUI process, made once (see ``lib_ti.jobs.owner``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType

from lib_ti.jobs.manager import JobManager
from lib_ti.jobs.owner import process_owned
from lib_ti.jobs.queue import BatchQueue, continue_from_checkpoint, job_runner, resume_step_of

QUEUE_FILE = "queue.json"


@dataclass
class Runtime:
    manager: JobManager
    api_host: object  # the WebUI package's WebUIHost for jobs that own the progress state (API, queue)
    queue: BatchQueue


def runtime(webui: ModuleType) -> Runtime:
    """The process's one Runtime; a UI reload re-runs the scripts and gets this same one back."""
    return process_owned(f"ti-trainer-runtime:{webui.NAME}", lambda: build_runtime(webui))


def build_runtime(webui: ModuleType) -> Runtime:
    manager = JobManager()
    api_host = webui.WebUIHost(owns_state=True)
    queue = BatchQueue(
        manager,
        job_runner(manager, api_host, webui.WebUIModel),
        lambda entry: webui.grid_after_training(entry.final_path, api_host.run_root(), "none", owns_state=True),
        store=os.path.join(api_host.run_root(), QUEUE_FILE),
        continue_config=continue_from_checkpoint(api_host.run_root),
        resume_step=resume_step_of(api_host.run_root),
    )
    return Runtime(manager, api_host, queue)
