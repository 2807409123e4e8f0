"""A new run never mixes with an earlier one in its run folder: the earlier run's files are moved aside first.

A run folder holds one run: the grid lists its checkpoints and the inspector plots its log as one history. So
before a new run writes, the files an earlier run of the same name left there (checkpoints, optimizer states, log,
config, state file, previews) move to ``<run folder>.<when that run started>``; nothing is deleted. Continuing a run (``weights``
from that run) keeps the folder; continuing from an earlier step of it moves the whole run aside and carries over
what came before that step, so the folder again tells one story.
"""

from __future__ import annotations

import os
import re
import shutil
import time

from lib_ti.embeddings.files import atomic_write_bytes, make_folder
from lib_ti.errors import UserError
from lib_ti.training.paths import RunPaths


def _patterns(name: str) -> tuple[re.Pattern, re.Pattern]:
    stem = re.escape(name)
    top = re.compile(rf"{stem}-(?:(\d+)(?:\.optimizer)?\.(?:safetensors|pt)|log\.csv|config\.json|state\.json)")
    sample = re.compile(rf"{stem}-(\d+)-\d+\.png")
    return top, sample


def run_files(paths: RunPaths) -> list[tuple[str, int | None]]:
    """(path, step or None) of every file a run of this name writes in its folder; other names' files are not."""
    top, sample = _patterns(paths.name)
    found = []
    for folder, pattern in ((paths.run_dir, top), (paths.samples_dir, sample)):
        if not os.path.isdir(folder):
            continue
        for fn in sorted(os.listdir(folder)):
            match = pattern.fullmatch(fn)
            if match and os.path.isfile(os.path.join(folder, fn)):
                found.append((os.path.join(folder, fn), int(match.group(1)) if match.group(1) else None))
    return found


def last_checkpoint_step(paths: RunPaths) -> int:
    """The latest step the folder holds a checkpoint (or optimizer state) of; previews and log rows do not count."""
    top, _ = _patterns(paths.name)
    return max((s for p, s in run_files(paths) if s is not None and top.fullmatch(os.path.basename(p))), default=0)


def _log_rows(path: str) -> list[tuple[int, str]]:
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()[1:]
    return [(int(line.split(",", 1)[0]), line) for line in lines if line.split(",", 1)[0].isdigit()]


def _aside_folder(paths: RunPaths, files: list[tuple[str, int | None]]) -> str:
    started = os.path.getmtime(paths.config_file) if os.path.isfile(paths.config_file) else None
    started = started or min(os.path.getmtime(p) for p, _ in files)
    base = f"{paths.run_dir.rstrip(os.sep)}.{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}"
    target, n = base, 2
    while os.path.exists(target):
        target, n = f"{base}-{n}", n + 1
    return target


def is_aside_of(folder: str, run_dir: str) -> bool:
    """Whether ``folder`` is where :func:`set_aside` moved a run of ``run_dir`` (``<run_dir>.<start time>``)."""
    base = re.escape(os.path.basename(os.path.normpath(run_dir)))
    return os.path.dirname(os.path.normpath(folder)) == os.path.dirname(os.path.normpath(run_dir)) and bool(
        re.fullmatch(rf"{base}\.\d{{8}}-\d{{6}}(?:-\d+)?", os.path.basename(os.path.normpath(folder)))
    )


def set_aside(paths: RunPaths) -> str | None:
    """Move an earlier run's files out of the run folder; returns where they went, or None if there were none.

    A folder that holds only that run is renamed as a whole (one atomic step); a folder shared with other runs
    (an ``output_dir`` used for several names) keeps the others' files and gives up only this name's.
    """
    files = run_files(paths)
    if not files:
        return None
    target = _aside_folder(paths, files)
    owned = {p for p, _ in files}
    everything = {os.path.join(r, f) for r, _, fs in os.walk(paths.run_dir) for f in fs}
    try:
        if everything == owned:
            os.rename(paths.run_dir, target)
            return target
        for path, _ in files:
            moved = os.path.join(target, os.path.relpath(path, paths.run_dir))
            os.makedirs(os.path.dirname(moved), exist_ok=True)
            os.rename(path, moved)
    except OSError as e:
        raise UserError(
            f"Cannot move the earlier run in {paths.run_dir!r} aside to {target!r}: {e.strerror or e}. "
            "Nothing was deleted; move it yourself or choose another output_dir."
        ) from None
    return target


def carry_over(paths: RunPaths, aside: str, until: int) -> None:
    """Copy back what the earlier run had up to ``until`` (checkpoints, previews, log rows, config), for a run that
    continues from that step."""
    make_folder(paths.run_dir)
    moved = RunPaths(paths.name, paths.final, aside)
    for path, step in run_files(moved):
        if step is None or step > until:
            continue
        target = os.path.join(paths.run_dir, os.path.relpath(path, aside))
        make_folder(os.path.dirname(target))
        shutil.copy2(path, target + ".tmp")
        os.replace(target + ".tmp", target)
    if os.path.isfile(moved.log_file):
        rows = [line for step, line in _log_rows(moved.log_file) if step <= until]
        atomic_write_bytes(paths.log_file, ("step,loss,lr,time\n" + "".join(r + "\n" for r in rows)).encode())


def keep_runs_apart(paths: RunPaths, step: int, continuing: bool) -> str | None:
    """Before a run writes: move an earlier run aside unless this one continues it from its last step. Returns what
    was done, for the run's messages."""
    if continuing and last_checkpoint_step(paths) <= step:
        # continuing from the last checkpoint (an interrupted run): the folder stays; log rows a crash left after
        # that step are cut by the trainer and previews after it are written again
        return None
    aside = set_aside(paths)
    if aside is None:
        return None
    if continuing:
        carry_over(paths, aside, step)
        return (
            f"{paths.run_dir} held steps after {step} of the run being continued: that run was moved to {aside} "
            f"and its steps up to {step} copied back, so the folder shows one run."
        )
    return (
        f"An earlier '{paths.name}' run was in {paths.run_dir}: it was moved to {aside} (nothing deleted), so this "
        "run's checkpoints, log and previews are not mixed with it."
    )
