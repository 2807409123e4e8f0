"""The HTTP API under /ti-trainer/v1/: start a training job, read its state, interrupt it.

Bad input answers 422 with the message the tab would show; a second job while one runs answers 409.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import re
from typing import Any, Callable

from fastapi import APIRouter, Body, Depends, HTTPException, Response
from pydantic import BaseModel, Field

from lib_ti import __version__
from lib_ti.api.access import ui_login
from lib_ti.jobs.queue import BatchQueue, queue_request
from lib_ti.training.config import parse_config, validate_token
from lib_ti.training.preview import preview_dataset
from lib_ti.errors import ConfigError, UserError
from lib_ti.embeddings.formats import convert, read_embedding
from lib_ti.grid.run import GridRequest, GridResult
from lib_ti.embeddings.inspector import history, inspect
from lib_ti.jobs.manager import Busy, Host, JobManager, preflight
from lib_ti.training.model import ModelAdapter
from lib_ti.training.run_state import continue_request, describe, find_runs
from lib_ti.ui.plot import loss_svg

PREFIX = "/ti-trainer/v1"

TRAIN_EXAMPLE = {
    "train_data_dir": "/data/mystyle",
    "token_string": "mystyle",
    "init_word": "painting",
    "num_vectors_per_token": 4,
    "learning_rate": "5e-3",
    "train_batch_size": 1,
    "max_train_steps": 500,
    "save_every_n_steps": 100,
}


GRID_DOC = (
    "embedding (required), strengths ('0.6, 0.8, 1.0'), mode (emphasis | vectors), baseline, prompts "
    "(list; the embedding's name or [name] marks its place), checkpoints ('none' | 'all' | '' = every k-th | "
    "'100, 300'), x/y/z "
    "(strength | prompt | checkpoint), negative_prompt, sampler_name, steps, cfg_scale, width, height, seed, "
    "max_images, save. Unset generation settings default to the txt2img tab's."
)
TRAIN_DOC = "A kohya-style JSON config (see the README), e.g. " + json.dumps(TRAIN_EXAMPLE)


class TrainResponse(BaseModel):
    job_id: str = Field(description="Poll GET /ti-trainer/v1/jobs/{job_id} for its state")
    state: str
    messages: list[str] = Field(default_factory=list, description="How the config was read (ignored keys, notes)")


class JobResponse(BaseModel):
    id: str
    state: str = Field(description="queued, running, done, failed or interrupted")
    step: int
    max_steps: int
    loss: float | None = None
    lr: float | None = None
    eta: float | None = Field(None, description="Seconds left, estimated")
    files: list[str] = Field(default_factory=list, description="Embedding and checkpoint files written")
    samples: list[str] = Field(default_factory=list, description="Preview images written")
    losses: list[list[float]] = Field(default_factory=list, description="[step, loss] pairs")
    messages: list[str] = Field(default_factory=list)
    error: str = ""
    final_path: str = ""
    run_dir: str = ""
    resumable: bool = Field(False, description="Interrupted or failed with a checkpoint: POST .../runs/continue")
    config: dict[str, Any] = Field(default_factory=dict)


def error_detail(e: UserError) -> dict[str, Any]:
    if isinstance(e, ConfigError):
        return {"message": str(e), "problems": e.problems}
    return {"message": str(e), "problems": [str(e)]}


def grid_response(result: GridResult) -> dict[str, Any]:
    def b64(image) -> str:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    return {
        "images": [b64(im) for im in result.images],
        "paths": result.paths,
        "cells": result.cells,
        "geometry": dataclasses.asdict(result.geometry) if result.geometry else None,
        "seed": result.seed,
        "notes": result.notes,
        "interrupted": result.interrupted,
    }


QUEUE_DOC = (
    '{"configs": [config, ...]} or {"folder": parent folder of dataset subfolders, "base": config}; '
    'add "grid": true to render a test grid after each training'
)
INSPECT_DOC = (
    '{"embedding": name} for a loaded one, or {"path": file, "second_path": the diffusers SDXL pair\'s other file}'
)
CONVERT_DOC = '{"path": file, "second_path": optional, "output_name": optional, "overwrite": false}'


def inspect_request(body: dict[str, Any], inspection: Any) -> dict[str, Any]:
    name = str(body.get("embedding") or "")
    path = inspection.embedding_path(name) if name else str(body.get("path") or "")
    if not path:
        raise UserError("Give an embedding name or a file path.")
    file = read_embedding(path, body.get("second_path") or None)
    report = inspect(file, inspection.reference())
    run_dir = file.metadata.get("ti_run_dir") or (inspection.run_dir(name) if name else "")
    stem = name or os.path.splitext(os.path.basename(path))[0]
    if not name and re.fullmatch(r".+-\d+", stem):  # a checkpoint: its run's files are named after the run
        stem = stem.rsplit("-", 1)[0]
    report["history"] = history(run_dir, stem, read_embedding) if run_dir and os.path.isdir(run_dir) else []
    return report


def convert_request(body: dict[str, Any], inspection: Any) -> dict[str, Any]:
    file = read_embedding(str(body.get("path") or ""), body.get("second_path") or None)
    name = str(body.get("output_name") or file.name)
    problem = validate_token(name)
    if problem:
        raise UserError(problem.replace("token_string", "output_name"))
    target = convert(
        file, os.path.join(inspection.embeddings_dir(), f"{name}.safetensors"), bool(body.get("overwrite"))
    )
    inspection.after_convert()
    return {"path": target, "name": name, "format": file.format, "vectors": next(iter(file.vectors.values())).shape[0]}


CONTINUE_DOC = '{"run_dir": the run folder} or {"name": the run\'s name}, as listed by GET /ti-trainer/v1/runs'


def _answer(service: Any, what: str, action: Callable[[], Any]) -> Any:
    """404 when the host offers no such service; a user error becomes 422 with the message the tab would show."""
    if service is None:
        raise HTTPException(status_code=404, detail={"message": f"The {what} is not available here."})
    try:
        return action()
    except UserError as e:
        raise HTTPException(status_code=422, detail=error_detail(e)) from None


def create_router(
    manager: JobManager,
    host: Host,
    adapter_factory: Callable[[], ModelAdapter],
    host_interrupt: Callable[[], None],
    dependencies: list | None = None,
    grid: Callable[[GridRequest], GridResult] | None = None,
    grid_defaults: Callable[[], dict[str, Any]] = dict,
    inspection: Any = None,
    queue: BatchQueue | None = None,
) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["TI Trainer"], dependencies=dependencies or [])

    @router.post("/inspect", responses={422: {"description": "Unreadable or unknown embedding"}})
    def inspect_embedding(body: dict[str, Any] = Body(..., description=INSPECT_DOC)) -> dict[str, Any]:
        """Format, family, vectors, norms against the model's tokens, nearest words, metadata and warnings."""
        return _answer(inspection, "inspector", lambda: inspect_request(body, inspection))

    @router.post("/convert", responses={422: {"description": "Unreadable file, or the target exists"}})
    def convert_embedding(body: dict[str, Any] = Body(..., description=CONVERT_DOC)) -> dict[str, Any]:
        """Convert any known format to the WebUI's .safetensors in its embeddings folder, keeping the metadata."""
        return _answer(inspection, "converter", lambda: convert_request(body, inspection))

    @router.post("/queue", responses={422: {"description": "No configs or folder"}})
    def add_to_queue(body: dict[str, Any] = Body(..., description=QUEUE_DOC)) -> dict[str, Any]:
        """Queue several trainings; they run one after another. Invalid entries are listed with their message."""
        added = _answer(queue, "queue", lambda: queue_request(body, queue))
        return {"added": [dataclasses.asdict(e) for e in added], "entries": queue.snapshot()}

    @router.get("/queue")
    def get_queue() -> dict[str, Any]:
        """Every entry with its state, whether the queue is paused and why (it is kept on disk across restarts)."""
        return queue.status() if queue is not None else {"entries": [], "paused": False, "notice": ""}

    @router.post("/queue/resume")
    def resume_queue() -> dict[str, Any]:
        """Go on after a restart, an Interrupt or a Reload UI: interrupted entries continue from their checkpoint."""
        _answer(queue, "queue", lambda: queue.resume())
        return queue.status()

    @router.post("/queue/pause")
    def pause_queue() -> dict[str, Any]:
        """Stop after the entry training now."""
        _answer(queue, "queue", lambda: queue.pause())
        return queue.status()

    @router.post("/grid", responses={422: {"description": "Invalid grid settings"}})
    def test_grid(body: dict[str, Any] = Body(..., description=GRID_DOC)) -> dict[str, Any]:
        """Render a strength × prompt × checkpoint grid of an embedding through txt2img; one seed for every cell."""
        return _answer(grid, "grid", lambda: grid_response(grid(GridRequest.from_dict(body, grid_defaults()))))

    @router.get("/version")
    def version() -> dict[str, str]:
        return {"version": __version__}

    @router.post(
        "/train",
        response_model=TrainResponse,
        responses={409: {"description": "A job is already running"}, 422: {"description": "Invalid settings"}},
    )
    def start_training(config: dict[str, Any] = Body(..., description=TRAIN_DOC)) -> TrainResponse:
        """Validate the kohya-style config, then train in the background on the loaded model."""
        return start_job(config)

    def refuse_if_busy() -> None:
        """409 before anything else, as the tab's Train answers; ``manager.create`` still decides for good."""
        try:
            manager.ensure_idle()
        except Busy as e:
            raise HTTPException(status_code=409, detail=error_detail(e)) from None

    def start_job(config: dict[str, Any]) -> TrainResponse:
        refuse_if_busy()
        try:
            parsed = parse_config(config)
            manager.ensure_idle()  # again: the checks below touch the model, never while another job trains on it
            adapter = adapter_factory()
            notes = preflight(parsed, adapter, host)
            job = manager.create(parsed.config)
        except Busy as e:
            raise HTTPException(status_code=409, detail=error_detail(e)) from None
        except UserError as e:
            raise HTTPException(status_code=422, detail=error_detail(e)) from None
        job.messages.extend(notes)
        manager.start(job, parsed.config, lambda: adapter, host)
        return TrainResponse(job_id=job.id, state=job.state, messages=notes)

    @router.get("/runs")
    def list_runs(resumable: bool = False) -> dict[str, Any]:
        """Runs with a state file under the run folder: state, last checkpoint, and whether one action continues it."""
        runs = [describe(r) for r in find_runs(host.run_root(), manager.run_dirs())]
        return {"runs": [r for r in runs if r["resumable"] or not resumable]}

    @router.post(
        "/runs/continue",
        response_model=TrainResponse,
        responses={409: {"description": "A job is already running"}, 422: {"description": "Nothing to continue"}},
    )
    def continue_run(body: dict[str, Any] = Body(..., description=CONTINUE_DOC)) -> TrainResponse:
        """Continue an interrupted run (crash, restart, Interrupt, Reload UI) from its last checkpoint."""
        refuse_if_busy()
        config = _answer(
            True,
            "run",
            lambda: continue_request(
                host.run_root(), manager.run_dirs(), str(body.get("run_dir") or ""), str(body.get("name") or "")
            ),
        )
        return start_job(config)

    @router.post("/config/check", responses={422: {"description": "Invalid settings"}})
    def check_config(config: dict[str, Any] = Body(..., description=TRAIN_DOC)) -> dict[str, Any]:
        """Read and validate a config without training: the normalised settings and what was ignored."""
        try:
            parsed = parse_config(config)
        except UserError as e:
            raise HTTPException(status_code=422, detail=error_detail(e)) from None
        return {
            "config": parsed.config.to_dict(),
            "messages": parsed.messages(),
            "unknown_keys": parsed.unknown_keys,
            "ignored_keys": parsed.ignored_keys,
        }

    @router.post("/dataset/preview", responses={422: {"description": "Invalid settings or dataset"}})
    def dataset_preview(config: dict[str, Any] = Body(..., description=TRAIN_DOC)) -> dict[str, Any]:
        """Which images and captions a config trains on, with repeats, buckets and steps, before training."""
        try:
            parsed = parse_config(config)
            try:
                native = adapter_factory().native_resolution
            except UserError:
                native = 512  # no model loaded: counts still hold for an explicit resolution
            data = preview_dataset(parsed.config, native)
        except UserError as e:
            raise HTTPException(status_code=422, detail=error_detail(e)) from None
        data["messages"] = parsed.messages()
        return data

    @router.get("/jobs", response_model=list[JobResponse])
    def list_jobs() -> list[dict[str, Any]]:
        return [job.to_dict(losses=False) for job in manager.jobs.values()]

    @router.get("/jobs/current", response_model=JobResponse, responses={404: {"description": "No job yet"}})
    def current_job() -> dict[str, Any]:
        job = manager.current()
        if job is None:
            raise HTTPException(status_code=404, detail={"message": "No training job has run in this session."})
        return job.to_dict()

    @router.get("/jobs/{job_id}", response_model=JobResponse, responses={404: {"description": "Unknown job"}})
    def get_job(job_id: str) -> dict[str, Any]:
        job = manager.get(job_id)
        if job is None:
            raise HTTPException(status_code=404, detail={"message": f"No job {job_id!r} in this session."})
        return job.to_dict()

    @router.get("/jobs/{job_id}/loss.svg", response_class=Response, responses={404: {"description": "Unknown job"}})
    def job_loss_svg(job_id: str) -> Response:
        """The job's loss curve (raw and smoothed), for the tab's live view."""
        job = manager.current() if job_id == "current" else manager.get(job_id)
        losses = job.losses if job is not None else []
        return Response(loss_svg(losses), media_type="image/svg+xml", headers={"Cache-Control": "no-store"})

    @router.post(
        "/jobs/{job_id}/interrupt", response_model=JobResponse, responses={404: {"description": "Unknown job"}}
    )
    def interrupt_job(job_id: str) -> dict[str, Any]:
        """Stop after the current step; the embedding is saved as it is and stays loadable."""
        job = manager.get(job_id)
        if job is None:
            raise HTTPException(status_code=404, detail={"message": f"No job {job_id!r} in this session."})
        manager.interrupt(job, host_interrupt)
        return job.to_dict()

    return router


def create_ui_router(manager: JobManager) -> APIRouter:
    """What the tab's page fetches itself (the live loss curve), behind the page's own login, with or without --api."""
    router = APIRouter(prefix="/ti-trainer/ui", dependencies=[Depends(ui_login)], include_in_schema=False)

    @router.get("/jobs/{job_id}/loss.svg", response_class=Response)
    def ui_loss_svg(job_id: str) -> Response:
        job = manager.current() if job_id == "current" else manager.get(job_id)
        losses = job.losses if job is not None else []
        return Response(loss_svg(losses), media_type="image/svg+xml", headers={"Cache-Control": "no-store"})

    return router
