"""Where a run writes: the final embedding in the WebUI's folder, everything else in the run's own folder.

Checkpoints stay out of the embeddings folder, which the WebUI scans recursively: there they would crowd the
embedding list and clash by name.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

from lib_ti.training.config import TrainConfig
from lib_ti.errors import UserError

EMBEDDING_EXTENSIONS = (".safetensors", ".pt", ".bin")


@dataclass
class RunPaths:
    name: str
    final: str
    run_dir: str

    def checkpoint(self, step: int) -> str:
        return os.path.join(self.run_dir, f"{self.name}-{step}{os.path.splitext(self.final)[1]}")

    def optimizer_file(self, step: int) -> str:
        return os.path.join(self.run_dir, f"{self.name}-{step}.optimizer.safetensors")

    @property
    def log_file(self) -> str:
        return os.path.join(self.run_dir, f"{self.name}-log.csv")

    @property
    def config_file(self) -> str:
        return os.path.join(self.run_dir, f"{self.name}-config.json")

    @property
    def state_file(self) -> str:
        """running / done / interrupted / failed, written atomically: what a restart reads to offer a continue."""
        return os.path.join(self.run_dir, f"{self.name}-state.json")

    @property
    def samples_dir(self) -> str:
        return os.path.join(self.run_dir, "samples")


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def existing_embedding_files(embeddings_dir: str, name: str) -> list[str]:
    """Files the WebUI would load under ``name`` (it searches the folder recursively)."""
    found = []
    for root, _, files in os.walk(embeddings_dir, followlinks=True):
        for fn in files:
            stem, ext = os.path.splitext(fn)
            if ext.lower() in EMBEDDING_EXTENSIONS and stem == name:
                found.append(os.path.join(root, fn))
    return found


def preview_caption(path: str) -> str:
    """'step 300' for a preview file ``<name>-<step, 6 digits>-<i>.png``, to label it in the gallery."""
    match = re.search(r"-(\d{6,})-\d+\.png$", os.path.basename(path))
    return f"step {int(match.group(1))}" if match else ""


def list_checkpoints(run_dir: str, name: str) -> list[tuple[int, str]]:
    """(step, path) of a run's saved checkpoints, by step."""
    out = []
    for path in glob.glob(os.path.join(glob.escape(run_dir), f"{glob.escape(name)}-*")):
        stem, ext = os.path.splitext(os.path.basename(path))
        step = stem[len(name) + 1 :]
        if ext in (".safetensors", ".pt") and step.isdigit():
            out.append((int(step), path))
    return sorted(out)


def run_dir_for(config: TrainConfig, run_root: str) -> str:
    return config.output_dir or os.path.join(run_root, config.name)


def plan_paths(config: TrainConfig, embeddings_dir: str, run_root: str, existing: set[str]) -> RunPaths:
    """Decide every path and refuse, before anything is written, to overwrite what the user did not offer."""
    name = config.name
    final = os.path.join(embeddings_dir, f"{name}.{config.save_model_as}")
    run_dir = run_dir_for(config, run_root)
    if _inside(run_dir, embeddings_dir):
        raise UserError(
            f"output_dir {run_dir!r} is inside the embeddings folder; checkpoints there would appear "
            "in the WebUI's embedding list. Choose a folder outside it (or leave output_dir empty)."
        )
    clashes = existing_embedding_files(embeddings_dir, name) if os.path.isdir(embeddings_dir) else []
    if (clashes or name in existing) and not config.overwrite:
        where = clashes[0] if clashes else "the WebUI's embedding list"
        raise UserError(
            f"An embedding named {name!r} already exists ({where}). Tick 'overwrite' to replace it, "
            "or choose another output_name."
        )
    paths = RunPaths(name, final, run_dir)
    if not config.weights and not config.overwrite and list_checkpoints(run_dir, name):
        raise UserError(
            f"{run_dir!r} already holds checkpoints of an earlier '{name}' run. Tick 'overwrite', "
            "continue it with 'weights', or choose another output_name or output_dir."
        )
    return paths
