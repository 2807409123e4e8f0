"""The batch queue: order, failures that do not stop the others, dataset folders with their own JSON, the API."""

from __future__ import annotations

import json
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from helpers import FolderHost, make_dataset, tiny_model
from lib_ti.api.routes import create_router
from lib_ti.jobs.queue import BatchQueue, folder_configs, job_runner, queue_request
from lib_ti.errors import UserError
from lib_ti.jobs.manager import JobManager

pytestmark = pytest.mark.training


@pytest.fixture
def queue(tmp_path):
    model = tiny_model()
    host = FolderHost(str(tmp_path))
    manager = JobManager()
    grids = []
    q = BatchQueue(
        manager,
        job_runner(manager, host, lambda: model),
        run_grid=lambda entry: grids.append(entry.label) or [f"/grids/{entry.label}.png"],
        poll=0.01,
    )
    q.grids, q.host = grids, host
    return q


def wait_idle(queue, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(e["state"] not in ("queued", "running") for e in queue.snapshot()):
            return queue.snapshot()
        time.sleep(0.05)
    raise AssertionError(queue.snapshot())


def test_entries_run_in_order_and_a_failure_does_not_stop_the_rest(queue, tmp_path):
    good = make_dataset(str(tmp_path / "a"))
    entries = queue_request(
        {
            "configs": [
                {"train_data_dir": good, "token_string": "first", "max_train_steps": 2, "save_every_n_steps": 0},
                {"train_data_dir": good, "token_string": "bad token"},
                {"train_data_dir": str(tmp_path / "missing"), "token_string": "third", "max_train_steps": 2},
                "not a dict",
                {"train_data_dir": good, "token_string": "fifth", "max_train_steps": 2, "save_every_n_steps": 0},
            ],
            "grid": True,
        },
        queue,
    )
    assert [e.state for e in entries][1] == "invalid" and "contains spaces" in entries[1].error
    done = wait_idle(queue)
    assert [e["state"] for e in done] == ["done", "invalid", "failed", "invalid", "done"]
    assert "is not a folder" in done[2]["error"] and "not a JSON object" in done[3]["error"]
    assert queue.grids == ["first", "fifth"] and done[0]["grid_paths"] == ["/grids/first.png"]
    jobs = sorted(queue.manager.jobs.values(), key=lambda j: j.created)
    assert [j.config["token_string"] for j in jobs] == ["first", "third", "fifth"]
    assert jobs[0].finished <= jobs[2].created  # one after another


def test_dataset_folders_with_their_own_json(tmp_path):
    make_dataset(str(tmp_path / "sets" / "cat style"))
    make_dataset(str(tmp_path / "sets" / "dog"))
    (tmp_path / "sets" / "dog" / "ti_trainer.json").write_text(
        json.dumps({"token_string": "dogtok", "init_word": "dog"})
    )
    (tmp_path / "sets" / "empty").mkdir()
    make_dataset(str(tmp_path / "sets" / "kohya" / "10_kohya"))  # kohya's layout: images one level down
    configs = folder_configs(str(tmp_path / "sets"), {"init_word": "art", "max_train_steps": 5})
    assert [label for label, _ in configs] == ["cat style", "dog", "empty", "kohya"]
    assert "_error" not in configs[3][1]
    assert configs[0][1]["token_string"] == "cat_style" and configs[0][1]["init_word"] == "art"
    assert configs[1][1]["token_string"] == "dogtok" and configs[1][1]["init_word"] == "dog"
    assert configs[1][1]["max_train_steps"] == 5 and configs[1][1]["train_data_dir"].endswith("dog")
    assert "no images" in configs[2][1]["_error"]  # a subfolder without images is listed as invalid, not dropped
    with pytest.raises(UserError, match="No subfolder"):
        folder_configs(str(tmp_path / "sets" / "empty"), {})


def test_queue_api(queue, tmp_path):
    app = FastAPI()
    app.include_router(create_router(queue.manager, queue.host, lambda: None, lambda: None, queue=queue))
    client = TestClient(app)
    assert client.post("/ti-trainer/v1/queue", json={}).status_code == 422
    make_dataset(str(tmp_path / "sets" / "one"))
    response = client.post(
        "/ti-trainer/v1/queue",
        json={"folder": str(tmp_path / "sets"), "base": {"max_train_steps": 2, "save_every_n_steps": 0}},
    )
    assert response.status_code == 200 and [e["label"] for e in response.json()["added"]] == ["one"]
    wait_idle(queue)
    assert client.get("/ti-trainer/v1/queue").json()["entries"][0]["state"] == "done"
