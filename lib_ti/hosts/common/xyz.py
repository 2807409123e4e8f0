"""The X/Y/Z plot axes 'TI: strength' and 'TI: checkpoint' (the plot script is the same in both WebUIs)."""

from __future__ import annotations

import functools

from lib_ti.hosts.common.grid import run_dir_of
from lib_ti.hosts.common.store import EmbeddingStore


def find_xyz_module():
    """The WebUI's bundled X/Y/Z plot script module, or None when it is missing or changed."""
    from modules import scripts

    for data in scripts.scripts_data:
        if data.script_class.__module__ in ("xyz_grid.py", "scripts.xyz_grid") and hasattr(data, "module"):
            module = data.module
            if hasattr(module, "AxisOption") and isinstance(getattr(module, "axis_options", None), list):
                return module
    return None


def _names_in(store: EmbeddingStore, prompt: str) -> list[str]:
    from lib_ti.grid.plan import names_in_prompt

    return names_in_prompt(prompt, sorted(store.existing_embedding_names(), key=len, reverse=True))


def xyz_apply_strength(store: EmbeddingStore, p, x, xs) -> None:
    from lib_ti.grid.plan import reweight

    names = _names_in(store, p.prompt)
    if not names:
        raise RuntimeError("TI: strength found no embedding in the prompt.")
    for name in names:
        p.prompt = reweight(p.prompt, name, float(x))


def xyz_apply_checkpoint(store: EmbeddingStore, run_root, p, x, xs) -> None:
    """Use the embedding's checkpoint at step x: the prompt names it '<name>-<step>', which TI Trainer resolves
    in every generation (so the cell's infotext reproduces it too)."""
    from lib_ti.grid.aliases import alias
    from lib_ti.grid.plan import rename
    from lib_ti.training.paths import list_checkpoints

    label = str(x).strip()
    if label.lower() == "final":
        return
    for name in _names_in(store, p.prompt):
        run_dir = run_dir_of(store, name, run_root())
        found = dict(list_checkpoints(run_dir, name))
        if not label.isdigit() or int(label) not in found:
            raise RuntimeError(
                f"TI: checkpoint: {name} has no checkpoint at step {label} in {run_dir} "
                f"(saved: {', '.join(map(str, sorted(found))) or 'none'})."
            )
        p.prompt = rename(p.prompt, name, alias(name, label))


def add_xyz_axes(store: EmbeddingStore, run_root) -> str:
    """Add 'TI: strength' and 'TI: checkpoint' to the X/Y/Z plot; says what happened, for the log.

    ``run_root()`` gives the folder of runs, read when the axis is used (the setting may change)."""
    module = find_xyz_module()
    if module is None:
        return "TI Trainer: the X/Y/Z plot script was not found (or has changed); its TI axes are skipped."
    if any(getattr(o, "label", "").startswith("TI: ") for o in module.axis_options):
        return "TI Trainer: X/Y/Z axes already added."
    module.axis_options.extend(
        [
            module.AxisOption("TI: strength", float, functools.partial(xyz_apply_strength, store)),
            module.AxisOption("TI: checkpoint", str, functools.partial(xyz_apply_checkpoint, store, run_root)),
        ]
    )
    return "TI Trainer: added X/Y/Z plot axes 'TI: strength' and 'TI: checkpoint'."
