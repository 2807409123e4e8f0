"""The queue on disk: a restart shows it as it was and starts nothing; Resume goes on from the last checkpoint."""

from __future__ import annotations

import json
import os
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from helpers import FolderHost, make_dataset, tiny_model
from lib_ti.api.routes import create_router
from lib_ti.jobs.manager import JobManager
from lib_ti.jobs.owner import process_owned
from lib_ti.jobs.queue import BatchQueue, continue_from_checkpoint, job_runner, queue_request, resume_step_of

pytestmark = pytest.mark.training


def make_queue(tmp_path, host=None, manager=None) -> BatchQueue:
    host = host or FolderHost(str(tmp_path))
    manager = manager or JobManager()
    queue = BatchQueue(
        manager,
        job_runner(manager, host, tiny_model),
        poll=0.01,
        store=str(tmp_path / "runs" / "queue.json"),
        continue_config=continue_from_checkpoint(host.run_root),
        resume_step=resume_step_of(host.run_root),
    )
    queue.host = host
    return queue


def wait_settled(queue, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        entries = queue.snapshot()
        if not any(e["state"] == "running" for e in entries) and (
            queue.paused or all(e["state"] != "queued" for e in entries)
        ):
            if queue._thread is None or not queue._thread.is_alive():
                return entries
        time.sleep(0.05)
    raise AssertionError(queue.snapshot())


def configs(tmp_path, *tokens, steps=4):
    data = make_dataset(str(tmp_path / "data"))
    return [
        {"train_data_dir": data, "token_string": t, "max_train_steps": steps, "save_every_n_steps": 2, "seed": 1}
        for t in tokens
    ]


def test_a_restart_restores_every_entry_and_starts_nothing(tmp_path):
    store = tmp_path / "runs" / "queue.json"
    store.parent.mkdir(parents=True)
    entry = {"label": "x", "config": {"token_string": "x", "train_data_dir": str(tmp_path)}, "step": 3}
    store.write_text(
        json.dumps(
            {
                "version": 1,
                "paused": False,
                "entries": [
                    {**entry, "id": "a", "state": "done", "final_path": "/e/a.safetensors"},
                    {**entry, "id": "b", "state": "running", "job_id": "old"},
                    {**entry, "id": "c", "state": "queued"},
                    {**entry, "id": "d", "state": "invalid", "error": "bad", "unknown_future_key": 1},
                ],
            }
        )
    )
    queue = make_queue(tmp_path)
    time.sleep(0.3)
    states = [(e["id"], e["state"], e["resume"]) for e in queue.snapshot()]
    assert states == [("a", "done", False), ("b", "interrupted", True), ("c", "queued", False), ("d", "invalid", False)]
    assert queue.paused and "2 entries" in queue.notice and "Resume queue" in queue.notice
    assert queue.manager.jobs == {} and queue._thread is None  # nothing trains by surprise
    assert "WebUI stopped" in queue.snapshot()[1]["error"]
    assert json.loads(store.read_text())["paused"] is True


def test_an_interrupt_pauses_the_queue_and_resume_continues_from_the_checkpoint(tmp_path):
    queue = make_queue(tmp_path)
    host = queue.host

    def progress(job, record):  # the user presses Interrupt during step 3 of the first entry
        if job.config["token_string"] == "first" and record.step == 3 and not job.interrupt_requested:
            job.interrupt_requested = True

    host.progress = progress
    queue_request({"configs": configs(tmp_path, "first", "second")}, queue)
    entries = wait_settled(queue)
    assert [e["state"] for e in entries] == ["interrupted", "queued"] and queue.paused
    assert "interrupted at step 3" in queue.notice
    saved = json.loads((tmp_path / "runs" / "queue.json").read_text())
    assert [e["state"] for e in saved["entries"]] == ["interrupted", "queued"]

    restarted = make_queue(tmp_path, host)  # a restart reads the same file
    assert [e["state"] for e in restarted.snapshot()] == ["interrupted", "queued"] and restarted.paused
    assert restarted.resume() == 2
    entries = wait_settled(restarted)
    assert [e["state"] for e in entries] == ["done", "done"] and not restarted.paused
    first = next(j for j in restarted.manager.jobs.values() if j.config["token_string"] == "first")
    assert any("Resuming from first-3.safetensors at step 3" in m for m in first.messages), first.messages
    assert any("Loaded the optimizer state" in m for m in first.messages)
    assert first.step == 4 and [s for s, _ in first.losses] == [4]  # Interrupt saved step 3 as it was
    assert [e["state"] for e in json.loads((tmp_path / "runs" / "queue.json").read_text())["entries"]] == [
        "done",
        "done",
    ]


def test_adding_to_a_paused_queue_waits_for_resume(tmp_path):
    queue = make_queue(tmp_path)
    queue.pause()
    queue_request({"configs": configs(tmp_path, "later", steps=2)}, queue)
    time.sleep(0.3)
    assert queue.snapshot()[0]["state"] == "queued" and queue.manager.jobs == {}
    queue.resume()
    assert wait_settled(queue)[0]["state"] == "done"


def test_a_damaged_queue_file_is_kept_aside_and_said(tmp_path):
    store = tmp_path / "runs" / "queue.json"
    store.parent.mkdir(parents=True)
    store.write_text("{half a file")
    queue = make_queue(tmp_path)
    assert queue.entries == [] and "could not be read" in queue.notice
    kept = [n for n in os.listdir(store.parent) if n.startswith("queue.json.damaged-")]
    assert kept and (store.parent / kept[0]).read_text() == "{half a file"


def test_no_store_file_is_written_until_there_is_something_to_keep(tmp_path):
    make_queue(tmp_path)
    assert not (tmp_path / "runs" / "queue.json").exists()


def test_queue_resume_and_pause_routes(tmp_path):
    queue = make_queue(tmp_path)
    app = FastAPI()
    app.include_router(create_router(queue.manager, queue.host, tiny_model, lambda: None, queue=queue))
    client = TestClient(app)
    assert client.post("/ti-trainer/v1/queue/pause").json()["paused"] is True
    client.post("/ti-trainer/v1/queue", json={"configs": configs(tmp_path, "viaapi", steps=2)})
    assert client.get("/ti-trainer/v1/queue").json()["entries"][0]["state"] == "queued"
    body = client.post("/ti-trainer/v1/queue/resume").json()
    assert body["paused"] is False
    assert wait_settled(queue)[0]["state"] == "done"


def test_one_owner_per_process():
    made = []
    first = process_owned("test-owner", lambda: made.append(1) or object())
    again = process_owned("test-owner", lambda: made.append(1) or object())  # what a second script load does
    assert first is again and made == [1]
    assert process_owned("test-owner-2", object) is not first


def test_an_entry_continued_outside_the_queue_is_not_trained_again(tmp_path):
    from lib_ti.errors import UserError
    from lib_ti.jobs.queue import Entry
    from lib_ti.training.run_state import RunState, write_run_state

    config = configs(tmp_path, "elsewhere")[0]
    write_run_state(RunState("done", "elsewhere", str(tmp_path / "runs" / "elsewhere"), "", 4, 4))
    config_for = continue_from_checkpoint(lambda: str(tmp_path / "runs"))
    with pytest.raises(UserError, match="finished outside the queue"):
        config_for(Entry("e", "elsewhere", config, state="queued", resume=True))
    assert config_for(Entry("f", "fresh", {**config, "token_string": "fresh"}, resume=True)) is None  # starts anew


def test_after_a_restart_an_entry_shows_the_step_it_continues_from(tmp_path):
    """The queue file keeps the last step it saw (5); continuing starts from the last checkpoint (4)."""
    from lib_ti.training.run_state import RunState, write_run_state

    config = configs(tmp_path, "cut", steps=6)[0]
    run_dir = tmp_path / "runs" / "cut"
    run_dir.mkdir(parents=True)
    for step in (2, 4):
        (run_dir / f"cut-{step}.safetensors").write_bytes(b"")
    write_run_state(RunState("running", "cut", str(run_dir), "", 5, 6, config=config))  # cut off after step 5
    fresh = {**config, "token_string": "fresh"}  # cut off before its first checkpoint: starts again
    entry = {"label": "cut", "config": config, "state": "running", "step": 5, "job_id": "old"}
    store = tmp_path / "runs" / "queue.json"
    store.write_text(
        json.dumps({"version": 1, "entries": [{**entry, "id": "a"}, {**entry, "id": "b", "config": fresh}]})
    )
    queue = make_queue(tmp_path)
    [cut, again] = queue.snapshot()
    assert (cut["state"], cut["step"]) == ("interrupted", 4) and "step 4" in cut["error"]
    assert (again["state"], again["step"]) == ("interrupted", 0) and "from the start" in again["error"]
    from lib_ti.ui.queue_section import QueueActions

    assert [row[2] for row in QueueActions(queue).table()] == ["step 4", "step 0"]
