"""The /ti-trainer/v1 routes on a real FastAPI app, with jobs training a tiny real model."""

from __future__ import annotations

import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from helpers import FolderHost, make_dataset, tiny_model
from lib_ti.api.routes import create_router
from lib_ti.jobs.manager import JobManager

pytestmark = pytest.mark.training


@pytest.fixture
def api(tmp_path):
    host = FolderHost(str(tmp_path))
    model = tiny_model()
    manager = JobManager()
    interrupts = []
    app = FastAPI()
    adapters = []
    app.include_router(create_router(manager, host, lambda: adapters.append(1) or model, lambda: interrupts.append(1)))
    client = TestClient(app)
    client.host, client.manager, client.interrupts, client.adapters = host, manager, interrupts, adapters
    client.data = make_dataset(str(tmp_path / "data"))
    return client


def wait(client, job_id, states=("done", "failed", "interrupted"), timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f"/ti-trainer/v1/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job still {job['state']}")


def test_train_returns_a_job_id_at_once_and_the_job_finishes(api):
    response = api.post(
        "/ti-trainer/v1/train",
        json={
            "train_data_dir": api.data,
            "token_string": "mystyle",
            "init_word": "painting",
            "max_train_steps": 3,
            "save_every_n_steps": 1,
            "learning_rate": "5e-3",
            "epoch": 3,
            "frobnicate": 1,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] in ("queued", "running", "done")
    assert any("frobnicate" in m for m in body["messages"]) and any(
        "'epoch' has no effect" in m for m in body["messages"]
    )
    job = wait(api, body["job_id"])
    assert job["state"] == "done" and job["step"] == 3 and job["max_steps"] == 3
    assert job["final_path"].endswith("embeddings/mystyle.safetensors")
    assert len(job["losses"]) == 3 and job["loss"] == job["losses"][-1][1]
    assert sum(f.endswith(".safetensors") for f in job["files"]) == 4  # 3 checkpoints + final
    svg = api.get(f"/ti-trainer/v1/jobs/{body['job_id']}/loss.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml") and "<polyline" in svg.text
    assert api.get("/ti-trainer/v1/jobs/current").json()["id"] == body["job_id"]


def test_the_job_is_done_only_when_the_host_has_finished_with_it(api):
    """A slow end (hashing a full-size model's weights, the grid after training) belongs to the job: a caller that
    waits for "done" must see its messages."""
    import threading

    release = threading.Event()

    def slow_end(job):
        release.wait(30)
        job.messages.append("Model weights verified unchanged.")

    api.host.end = slow_end
    body = {"train_data_dir": api.data, "token_string": "mystyle", "max_train_steps": 1, "save_every_n_steps": 0}
    job_id = api.post("/ti-trainer/v1/train", json=body).json()["job_id"]
    deadline = time.time() + 60
    while api.manager.jobs[job_id].state in ("queued", "running") and time.time() < deadline:
        time.sleep(0.05)
    assert api.manager.jobs[job_id].state == "done"  # training itself is over, the host is not
    assert api.get(f"/ti-trainer/v1/jobs/{job_id}").json()["state"] == "running"
    release.set()
    job = wait(api, job_id)
    assert job["state"] == "done" and "Model weights verified unchanged." in job["messages"]


@pytest.mark.parametrize(
    "payload,needle",
    [
        ({"token_string": "my style"}, "contains spaces"),
        ({"token_string": "(x)"}, "prompt parser"),
        ({"num_vectors_per_token": 0}, "num_vectors_per_token"),
        ({"learning_rate": "1.2x"}, "learning_rate"),
        ({"max_train_steps": -5}, "max_train_steps"),
        ({"train_data_dir": "/nonexistent/folder"}, "is not a folder"),
    ],
)
def test_bad_input_answers_422_with_the_message(api, payload, needle):
    body = {"train_data_dir": api.data, "token_string": "mystyle", "max_train_steps": 2, **payload}
    response = api.post("/ti-trainer/v1/train", json=body)
    assert response.status_code == 422
    assert needle in response.json()["detail"]["message"]
    assert not api.manager.jobs


def test_existing_embedding_answers_422_and_is_kept(api):
    existing = f"{api.host.embeddings_dir()}/mystyle.safetensors"
    with open(existing, "wb") as f:
        f.write(b"keep me")
    response = api.post("/ti-trainer/v1/train", json={"train_data_dir": api.data, "token_string": "mystyle"})
    assert response.status_code == 422 and "overwrite" in response.json()["detail"]["message"]
    assert open(existing, "rb").read() == b"keep me"


def test_a_second_job_while_one_waits_answers_409_and_interrupt_cancels_it(api):
    body = {"train_data_dir": api.data, "token_string": "mystyle", "max_train_steps": 2}
    api.host.lock.acquire()  # the WebUI is busy generating: the job waits in the queue
    try:
        first = api.post("/ti-trainer/v1/train", json=body).json()
        made = len(api.adapters)
        second = api.post("/ti-trainer/v1/train", json={**body, "token_string": "other"})
        assert second.status_code == 409 and "already" in second.json()["detail"]["message"]
        assert len(api.adapters) == made  # refused before its checks touched the model the first job trains on
        assert api.post(f"/ti-trainer/v1/jobs/{first['job_id']}/interrupt").status_code == 200
    finally:
        api.host.lock.release()
    job = wait(api, first["job_id"])
    assert job["state"] == "interrupted" and job["step"] == 0


def test_a_busy_trainer_answers_409_before_reading_the_config(api):
    """Like the tab's Train: while a job runs, any request (even a broken one) hears that first."""
    body = {"train_data_dir": api.data, "token_string": "mystyle", "max_train_steps": 2}
    api.host.lock.acquire()
    try:
        first = api.post("/ti-trainer/v1/train", json=body).json()
        for bad in ({**body, "token_string": "my style"}, {"max_train_steps": "many"}):
            response = api.post("/ti-trainer/v1/train", json=bad)
            assert response.status_code == 409 and "already" in response.json()["detail"]["message"]
        response = api.post("/ti-trainer/v1/runs/continue", json={"name": "nope"})
        assert response.status_code == 409 and "already" in response.json()["detail"]["message"]
        api.post(f"/ti-trainer/v1/jobs/{first['job_id']}/interrupt")
    finally:
        api.host.lock.release()
    wait(api, first["job_id"])
    response = api.post("/ti-trainer/v1/train", json={**body, "token_string": "my style"})
    assert response.status_code == 422  # once idle, the config's own problems


def test_unknown_job_is_404(api):
    assert api.get("/ti-trainer/v1/jobs/nope").status_code == 404
    assert api.post("/ti-trainer/v1/jobs/nope/interrupt").status_code == 404


def test_config_check_lists_unknown_and_ignored_keys(api):
    response = api.post(
        "/ti-trainer/v1/config/check",
        json={"token_string": "x", "train_data_dir": "d", "xformers": True, "whatever": 1},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["unknown_keys"] == ["whatever"] and "xformers" in body["ignored_keys"]


def test_an_interrupted_run_is_listed_and_continued_in_one_request(api):
    body = {"train_data_dir": api.data, "token_string": "mystyle", "max_train_steps": 6, "save_every_n_steps": 2}
    original = api.host.progress

    def progress(job, record):
        original(job, record)
        if record.step == 3:
            job.interrupt_requested = True

    api.host.progress = progress
    first = wait(api, api.post("/ti-trainer/v1/train", json=body).json()["job_id"])
    assert first["state"] == "interrupted" and first["resumable"] and first["run_dir"].endswith("mystyle")
    assert "POST /ti-trainer/v1/runs/continue" in first["messages"][-1]
    api.host.progress = original
    [run] = api.get("/ti-trainer/v1/runs", params={"resumable": True}).json()["runs"]
    assert run["name"] == "mystyle" and run["checkpoint_step"] == 3 and run["state"] == "interrupted"

    assert api.post("/ti-trainer/v1/runs/continue", json={}).status_code == 422
    assert api.post("/ti-trainer/v1/runs/continue", json={"name": "nope"}).status_code == 422
    response = api.post("/ti-trainer/v1/runs/continue", json={"name": "mystyle"})
    assert response.status_code == 200, response.text
    job = wait(api, response.json()["job_id"])
    assert job["state"] == "done" and job["step"] == 6 and [s for s, _ in job["losses"]] == [4, 5, 6]
    assert any("Resuming from mystyle-3.safetensors at step 3" in m for m in job["messages"])
    assert api.get("/ti-trainer/v1/runs", params={"resumable": True}).json()["runs"] == []
