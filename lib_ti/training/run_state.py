"""A run's state on disk, so a crash, a restart or a UI reload can say what happened and offer to continue.

Each run folder holds ``<name>-state.json`` (written atomically): ``running`` while it trains, rewritten at every
checkpoint, then ``done``, ``interrupted`` or ``failed``. A file that says ``running`` while no process trains it
means the WebUI stopped mid-run (killed, crashed, restarted): that run is shown as interrupted and can be continued
from its last checkpoint, with the optimizer state saved beside it and the step count going on.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterator

from lib_ti.embeddings.files import atomic_write_bytes, load_embedding
from lib_ti.errors import UserError
from lib_ti.training.earlier_runs import is_aside_of
from lib_ti.training.paths import list_checkpoints

log = logging.getLogger(__name__)
STATE_SUFFIX = "-state.json"

_ACTIVE: set[str] = set()  # state files of the runs training in this process now
_ACTIVE_LOCK = threading.Lock()


@dataclass
class RunState:
    state: str  # running | done | interrupted | failed
    name: str
    run_dir: str
    final_path: str
    step: int = 0
    max_steps: int = 0
    checkpoint: str = ""
    message: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    pid: int = 0
    process: str = ""  # the process's start time, so a reused pid is not taken for the run's own
    updated: float = 0.0
    aside_of: str = ""  # set when read: the folder a later run of this name moved it out of

    @property
    def path(self) -> str:
        return os.path.join(self.run_dir, self.name + STATE_SUFFIX)


def write_run_state(run: RunState) -> None:
    run.pid, run.process, run.updated = os.getpid(), process_marker(os.getpid()), time.time()
    atomic_write_bytes(run.path, json.dumps(asdict(run), indent=1).encode("utf-8"))


def record_state(run: RunState, state: str, step: int, message: str = "", checkpoint: str = "") -> None:
    """Rewrite the state file; a full disk is logged, it must not hide the training's own outcome."""
    run.state, run.step, run.message = state, step, message
    if checkpoint:
        run.checkpoint = checkpoint
    try:
        write_run_state(run)
    except UserError as e:
        log.warning("TI Trainer: could not write %s: %s", run.path, e)


def cut_log(path: str, step: int) -> None:
    """A resumed run's log goes on from its checkpoint: steps trained after it (before a crash) are dropped."""
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    kept = lines[:1] + [
        line for line in lines[1:] if line.split(",", 1)[0].isdigit() and int(line.split(",")[0]) <= step
    ]
    if len(kept) != len(lines):
        atomic_write_bytes(path, ("\n".join(kept) + "\n").encode("utf-8"))


def read_run_state(path: str) -> RunState | None:
    """The state file's record, or None when it is missing or unreadable (it is never trusted further)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        known = {f.name for f in fields(RunState)}
        run = RunState(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError):
        return None
    recorded, run.run_dir = run.run_dir, os.path.dirname(os.path.abspath(path))  # wherever it was moved
    run.aside_of = recorded if recorded and is_aside_of(run.run_dir, recorded) else ""
    return run


@contextlib.contextmanager
def training_here(run: RunState) -> Iterator[None]:
    """Mark the run as trained by this process while the block runs."""
    key = os.path.abspath(run.path)
    with _ACTIVE_LOCK:
        _ACTIVE.add(key)
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.discard(key)


def process_marker(pid: int) -> str:
    """When the process started, where the system says it (Linux /proc, or psutil); '' when unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        pass
    try:
        import psutil

        return str(psutil.Process(pid).create_time())
    except Exception:
        return ""


def process_alive(pid: int, marker: str) -> bool:
    if pid <= 0:
        return False
    now = process_marker(pid)
    if now:
        return not marker or now == marker
    if os.name == "posix":
        try:
            os.kill(pid, 0)
            return True
        except PermissionError:
            return True
        except OSError:
            return False
    return False  # unknown on this system: offer the continue rather than hide it


def effective_state(run: RunState) -> tuple[str, str]:
    """(state, why) as the user should see it: a 'running' file nobody trains is an interrupted run."""
    if run.state != "running":
        return run.state, run.message
    with _ACTIVE_LOCK:
        here = os.path.abspath(run.path) in _ACTIVE
    if here:
        return "running", ""
    if run.pid != os.getpid() and process_alive(run.pid, run.process):
        return "running", f"training in another process (pid {run.pid})"
    return "interrupted", f"The WebUI stopped during this run (crash, kill or restart) after step {run.step}."


def latest_checkpoint(run: RunState) -> tuple[int, str]:
    found = [(s, p) for s, p in list_checkpoints(run.run_dir, run.name) if s < (run.max_steps or s + 1)]
    return found[-1] if found else (0, "")


def describe(run: RunState) -> dict[str, Any]:
    """What the tab and the API list: the state a user should see and whether one action can continue it."""
    state, why = effective_state(run)
    step, checkpoint = latest_checkpoint(run)
    resumable = state in ("interrupted", "failed") and bool(checkpoint) and not run.aside_of
    if run.aside_of:
        why = moved_aside_note(run)
    elif state in ("interrupted", "failed") and not checkpoint:
        why = (why + " " if why else "") + "No checkpoint was saved before it stopped; train it again."
    return {
        "name": run.name,
        "run_dir": run.run_dir,
        "state": state,
        "step": run.step,
        "max_steps": run.max_steps,
        "checkpoint": checkpoint,
        "checkpoint_step": step,
        "resumable": resumable,
        "message": why,
        "final_path": run.final_path,
        "updated": run.updated,
    }


def moved_aside_note(run: RunState) -> str:
    """Why a run that a later run moved aside is not continued: it would go on in the later run's folder and
    replace that run's embedding. Its checkpoints stay usable (as ``weights``, or 'Use a checkpoint')."""
    return (
        f"Moved aside from {run.aside_of} by a later '{run.name}' run: kept as it was, not continued (that would "
        "mix it into the later run and replace its embedding). To go on from one of its checkpoints, train with "
        "it as weights under another output_name."
    )


def find_runs(run_root: str, extra_dirs: list[str] | tuple[str, ...] = ()) -> list[RunState]:
    """Every run with a state file under the run root (and in the extra folders), newest first."""
    paths = set(glob.glob(os.path.join(glob.escape(run_root), "*", "*" + STATE_SUFFIX)))
    for folder in extra_dirs:
        if folder:
            paths.update(glob.glob(os.path.join(glob.escape(folder), "*" + STATE_SUFFIX)))
    runs = [r for r in (read_run_state(p) for p in sorted(paths)) if r is not None]
    return sorted(runs, key=lambda r: r.updated, reverse=True)


def resumable_runs(run_root: str, extra_dirs: list[str] | tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [d for d in (describe(r) for r in find_runs(run_root, extra_dirs)) if d["resumable"]]


def pick_run(runs: list[RunState], run_dir: str = "", name: str = "") -> RunState:
    """The run a continue request names, by folder or by name (a name must be unambiguous)."""
    if run_dir:
        want = os.path.abspath(run_dir)
        found = [r for r in runs if os.path.abspath(r.run_dir) == want and (not name or r.name == name)]
    else:
        found = [r for r in runs if r.name == name]
    if not found:
        raise UserError(f"No run {name or run_dir!r} with a state file was found. List them with GET .../runs.")
    if len(found) > 1:
        raise UserError(f"Several runs are named {name!r}; give its run_dir.")
    return found[0]


def continue_config(run: RunState) -> dict[str, Any]:
    """The run's own config, from its last checkpoint: its vectors, optimizer state and step count go on.

    The embedding in the WebUI's folder is replaced (it is this run's, at that checkpoint); one that another run or
    the user put there under the same name is refused.
    """
    described = describe(run)
    if run.aside_of:
        raise UserError(f"{run.run_dir}: {moved_aside_note(run)}")
    if described["state"] == "running":
        raise UserError(f"The run {run.name!r} is still training ({described['message'] or 'in this WebUI'}).")
    if not described["checkpoint"]:
        raise UserError(f"The run {run.name!r} has no checkpoint to continue from. {described['message']}".strip())
    if run.final_path and os.path.isfile(run.final_path):
        try:
            owner = load_embedding(run.final_path)[1].get("ti_run_dir", "")
        except UserError:
            owner = ""
        if not owner or os.path.abspath(owner) != os.path.abspath(run.run_dir):
            raise UserError(
                f"{run.final_path!r} is not this run's embedding (another run or file took the name); "
                "move it away first, or train under another output_name."
            )
    return {**run.config, "weights": described["checkpoint"], "overwrite": True}


def continue_request(run_root: str, extra_dirs: list[str], run_dir: str = "", name: str = "") -> dict[str, Any]:
    """The config that continues the run named by folder or name (the tab and the API both ask this way)."""
    if not run_dir and not name:
        raise UserError("Say which run to continue: its run_dir or its name (GET /ti-trainer/v1/runs lists them).")
    return continue_config(pick_run(find_runs(run_root, extra_dirs), run_dir, name))
