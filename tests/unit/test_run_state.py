"""A crash loses nothing: the embedding is in place at every checkpoint, and the run says it can go on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from helpers import tiny_model, train_values
from lib_ti.embeddings.files import load_embedding, save_embedding
from lib_ti.errors import UserError
from lib_ti.training.config import parse_config
from lib_ti.training.run_state import (
    RunState,
    continue_config,
    continue_request,
    describe,
    find_runs,
    process_alive,
    process_marker,
    read_run_state,
    resumable_runs,
    write_run_state,
)
from lib_ti.training.trainer import Services, train

pytestmark = pytest.mark.training
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CRASH = textwrap.dedent(
    """
    import os, sys
    sys.path[:0] = [{root!r}, {tests!r}]
    from helpers import tiny_model
    from lib_ti.training.config import parse_config
    from lib_ti.training.trainer import Services, train

    def progress(record):
        if record.step == {kill_at}:
            os._exit(9)  # no cleanup at all, like kill -9 or a power cut

    config = parse_config(json.loads(sys.argv[1])).config
    train(config, tiny_model(), sys.argv[2], sys.argv[3], Services(progress=progress))
    """
).replace("import os, sys", "import json, os, sys")


def settings(tmp_path, **overrides):
    return train_values(tmp_path, **{"max_train_steps": 6, **overrides})


def crash_at(tmp_path, step: int, **overrides) -> None:
    """Train in another process and end it abruptly at ``step``."""
    code = CRASH.format(root=os.path.dirname(TESTS), tests=TESTS, kill_at=step)
    args = [json.dumps(settings(tmp_path, **overrides)), str(tmp_path / "emb"), str(tmp_path / "runs")]
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 9, out.stderr[-2000:]


def test_a_killed_run_leaves_the_embedding_at_its_last_checkpoint_and_continues_from_it(tmp_path):
    crash_at(tmp_path, 5)
    final = tmp_path / "emb" / "mystyle.safetensors"
    vectors, meta = load_embedding(str(final))  # loadable, whole, at the checkpoint before the kill
    assert meta["step"] == "4" and meta["ti_run_dir"] == str(tmp_path / "runs" / "mystyle")

    [listed] = resumable_runs(str(tmp_path / "runs"))
    assert listed["state"] == "interrupted" and listed["checkpoint_step"] == 4 and "stopped" in listed["message"]

    config = continue_request(str(tmp_path / "runs"), [], name="mystyle")
    assert config["weights"].endswith("mystyle-4.safetensors") and config["overwrite"] is True
    messages = []
    result = train(
        parse_config(config).config,
        tiny_model(),
        str(tmp_path / "emb"),
        str(tmp_path / "runs"),
        Services(message=messages.append),
        {"mystyle"},
    )
    assert result.state == "done" and result.step == 6 and result.losses[0][0] == 5
    assert any("Loaded the optimizer state" in m for m in messages), messages
    assert describe(read_run_state(str(tmp_path / "runs" / "mystyle" / "mystyle-state.json")))["state"] == "done"
    assert resumable_runs(str(tmp_path / "runs")) == []
    steps = [line.split(",")[0] for line in (tmp_path / "runs" / "mystyle" / "mystyle-log.csv").read_text().split()]
    assert steps[1:] == ["1", "2", "3", "4", "5", "6"]  # the steps after the checkpoint were cut and trained again


def test_checkpoints_rewrite_the_state_file_and_the_embedding(tmp_path):
    seen = []

    def progress(record):
        state = read_run_state(str(tmp_path / "runs" / "mystyle" / "mystyle-state.json"))
        seen.append((record.step, describe(state)["state"], state.step))

    config = parse_config(settings(tmp_path, max_train_steps=4)).config
    result = train(config, tiny_model(), str(tmp_path / "emb"), str(tmp_path / "runs"), Services(progress=progress))
    assert seen[0] == (1, "running", 0) and seen[-1][1] == "running"
    assert (3, "running", 2) in seen  # rewritten at the checkpoint of step 2
    state = read_run_state(str(tmp_path / "runs" / "mystyle" / "mystyle-state.json"))
    assert state.state == "done" and state.step == 4 and result.run_dir == state.run_dir


def test_an_interrupted_run_is_resumable_and_a_done_one_is_not(tmp_path):
    calls = []
    config = parse_config(settings(tmp_path)).config
    stop = Services(should_stop=lambda: calls.append(1) or len(calls) > 3)
    result = train(config, tiny_model(), str(tmp_path / "emb"), str(tmp_path / "runs"), stop)
    assert result.state == "interrupted"
    [listed] = resumable_runs(str(tmp_path / "runs"))
    assert listed["state"] == "interrupted" and listed["checkpoint_step"] == 3


def test_an_exception_marks_the_run_failed_not_running(tmp_path):
    def explode(record):
        if record.step == 3:
            raise RuntimeError("out of memory")

    config = parse_config(settings(tmp_path)).config
    with pytest.raises(RuntimeError):
        train(config, tiny_model(), str(tmp_path / "emb"), str(tmp_path / "runs"), Services(progress=explode))
    [run] = find_runs(str(tmp_path / "runs"))
    described = describe(run)
    assert described["state"] == "failed" and "out of memory" in described["message"]
    assert described["resumable"] and described["checkpoint_step"] == 2


def test_continue_refuses_an_embedding_that_is_not_the_runs(tmp_path):
    crash_at(tmp_path, 3)
    [run] = find_runs(str(tmp_path / "runs"))
    vectors, _ = load_embedding(run.final_path)
    save_embedding(run.final_path, vectors, "mystyle", 2, {"ti_run_dir": "/somewhere/else"})
    with pytest.raises(UserError, match="not this run's embedding"):
        continue_config(run)


def test_a_run_without_checkpoint_is_listed_but_not_resumable(tmp_path):
    folder = tmp_path / "runs" / "early"
    run = RunState("running", "early", str(folder), str(tmp_path / "emb" / "early.safetensors"), 0, 10)
    write_run_state(run)
    data = json.loads((folder / "early-state.json").read_text())
    data["pid"] = 0  # no process: the WebUI died before the first checkpoint
    (folder / "early-state.json").write_text(json.dumps(data))
    described = describe(read_run_state(str(folder / "early-state.json")))
    assert described["state"] == "interrupted" and not described["resumable"]
    assert "No checkpoint" in described["message"]
    with pytest.raises(UserError, match="no checkpoint"):
        continue_request(str(tmp_path / "runs"), [], name="early")


def test_a_run_of_this_process_that_nobody_trains_is_interrupted(tmp_path):
    run = RunState("running", "x", str(tmp_path / "x"), "", 2, 10)
    write_run_state(run)  # our own pid, but no training_here(): a thread that died, or a reload
    assert describe(read_run_state(run.path))["state"] == "interrupted"


def test_a_live_other_process_is_running_elsewhere(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        run = RunState("running", "x", str(tmp_path / "x"), "", 2, 10)
        write_run_state(run)
        data = json.loads(open(run.path).read())
        data.update(pid=child.pid, process=process_marker(child.pid))
        open(run.path, "w").write(json.dumps(data))
        described = describe(read_run_state(run.path))
        assert described["state"] == "running" and "another process" in described["message"]
        assert process_alive(child.pid, process_marker(child.pid))
        assert not process_alive(child.pid, "not-its-start-time")  # a reused pid is not the run's process
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid, data["process"])


def test_damaged_state_files_are_skipped(tmp_path):
    folder = tmp_path / "runs" / "bad"
    folder.mkdir(parents=True)
    (folder / "bad-state.json").write_text("{not json")
    assert find_runs(str(tmp_path / "runs")) == []
    with pytest.raises(UserError, match="Say which run"):
        continue_request(str(tmp_path / "runs"), [])


def test_continuing_an_interrupted_run_keeps_its_folder(tmp_path):
    """The crash left a log row after the last checkpoint: continuing from that checkpoint must not move the run
    folder aside (only a checkpoint after the step continued from does)."""
    crash_at(tmp_path, 5)
    runs = tmp_path / "runs"
    assert "5" in [line.split(",")[0] for line in (runs / "mystyle" / "mystyle-log.csv").read_text().split()]
    messages = []
    config = continue_request(str(runs), [], name="mystyle")
    result = train(
        parse_config(config).config,
        tiny_model(),
        str(tmp_path / "emb"),
        str(runs),
        Services(message=messages.append),
        {"mystyle"},
    )
    assert result.state == "done" and result.run_dir == str(runs / "mystyle")
    assert sorted(os.listdir(runs)) == ["mystyle"], os.listdir(runs)  # nothing moved to mystyle.<date>
    assert not any("moved to" in m for m in messages), messages
    assert (runs / "mystyle" / "mystyle-2.safetensors").is_file()


def test_keep_runs_apart_moves_only_for_later_checkpoints(tmp_path):
    from lib_ti.training.earlier_runs import keep_runs_apart
    from lib_ti.training.paths import RunPaths

    run_dir = tmp_path / "runs" / "mystyle"
    run_dir.mkdir(parents=True)
    paths = RunPaths("mystyle", str(tmp_path / "emb" / "mystyle.safetensors"), str(run_dir))
    for step in (2, 4):
        (run_dir / f"mystyle-{step}.safetensors").write_bytes(b"x")
    (run_dir / "mystyle-log.csv").write_text("step,loss,lr,time\n1,1,1,1\n4,1,1,1\n5,1,1,1\n")
    (run_dir / "mystyle-state.json").write_text("{}")
    assert keep_runs_apart(paths, 4, continuing=True) is None  # from the last checkpoint: the folder stays
    assert sorted(os.listdir(tmp_path / "runs")) == ["mystyle"]
    note = keep_runs_apart(paths, 2, continuing=True)  # from an earlier one: the run moves aside, steps <= 2 back
    assert note and "moved to" in note
    assert sorted(os.listdir(run_dir)) == ["mystyle-2.safetensors", "mystyle-log.csv"]  # the new run writes its state


def test_a_run_a_later_run_moved_aside_is_listed_but_not_offered(tmp_path):
    """Continuing it would write into the later run's folder and replace its embedding: it is kept, not offered."""
    config = parse_config(settings(tmp_path)).config
    for _ in range(2):  # the second run (overwrite) moves the first, interrupted at step 3, aside
        calls = []
        stop = Services(should_stop=lambda: calls.append(1) or len(calls) > 3)
        assert train(config, tiny_model(), str(tmp_path / "emb"), str(tmp_path / "runs"), stop).state == "interrupted"
        config = parse_config(settings(tmp_path, overwrite=True)).config
    [aside] = [d for d in os.listdir(tmp_path / "runs") if d.startswith("mystyle.")]
    [offered] = resumable_runs(str(tmp_path / "runs"))
    assert offered["run_dir"] == str(tmp_path / "runs" / "mystyle")
    listed = {r.run_dir: describe(r) for r in find_runs(str(tmp_path / "runs"))}
    moved = listed[str(tmp_path / "runs" / aside)]
    assert not moved["resumable"] and "Moved aside" in moved["message"]
    with pytest.raises(UserError, match="Moved aside"):
        continue_request(str(tmp_path / "runs"), [], str(tmp_path / "runs" / aside))
