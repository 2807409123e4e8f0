"""Shared test helpers: small datasets on disk and a host for jobs that uses plain folders and a lock."""

from __future__ import annotations

import contextlib
import os
import threading

import numpy as np
from PIL import Image

from tiny_model import TinySD


def make_dataset(folder: str, count: int = 4, caption: str | None = "mystyle", size=(80, 96), seed: int = 0) -> str:
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
            os.path.join(folder, f"{i:03d}.png")
        )
        if caption is not None:
            with open(os.path.join(folder, f"{i:03d}.txt"), "w", encoding="utf-8") as f:
                f.write(caption)
    return folder


def train_values(tmp_path, **overrides) -> dict:
    """A small training config (4 steps, checkpoints every 2) on a fresh dataset, as the training tests use it."""
    values = dict(
        train_data_dir=make_dataset(str(tmp_path / "data")),
        token_string="mystyle",
        init_word="painting",
        max_train_steps=4,
        save_every_n_steps=2,
        learning_rate="0.01",
        seed=1,
    )
    values.update(overrides)
    return values


def tiny_model(**kwargs) -> TinySD:
    return TinySD(**kwargs)


class FolderHost:
    """lib_ti.jobs.manager.Host over temporary folders; records what the WebUI would have been told."""

    def __init__(self, root: str):
        self.root = root
        self.lock = threading.Lock()
        self.stop = False
        self.records, self.previews, self.events = [], [], []
        os.makedirs(self.embeddings_dir(), exist_ok=True)

    def embeddings_dir(self) -> str:
        return os.path.join(self.root, "embeddings")

    def run_root(self) -> str:
        return os.path.join(self.root, "runs")

    def existing_names(self) -> set[str]:
        return {os.path.splitext(n)[0] for n in os.listdir(self.embeddings_dir())}

    def gpu_lock(self):
        return self.lock

    def begin(self, job) -> None:
        self.events.append("begin")

    def progress(self, job, record) -> None:
        self.records.append(record)

    def preview(self, job, images) -> None:
        self.previews.extend(images)

    def should_stop(self) -> bool:
        return self.stop

    def end(self, job) -> None:
        self.events.append("end")


@contextlib.contextmanager
def held(lock):
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def xyz_axis_indices(script_info: list[dict], labels: list[str], img2img: bool = False) -> list[int]:
    """The X/Y/Z plot's axis numbers for these labels, as GET /sdapi/v1/script-info lists them: other extensions
    (ControlNet, Hypertile) add axes too, before or after ours, so positions are never assumed."""
    for script in script_info:
        if script.get("name") == "x/y/z plot" and bool(script.get("is_img2img")) == img2img:
            axis = next(a for a in script["args"] if a.get("label") == "X type")
            choices = [c[0] if isinstance(c, (list, tuple)) else c for c in axis.get("choices") or []]
            missing = [label for label in labels if label not in choices]
            assert not missing, f"the X/Y/Z plot has no axis {missing} (it lists {choices})"
            return [choices.index(label) for label in labels]
    raise AssertionError("GET /sdapi/v1/script-info lists no x/y/z plot script")


def grid_form(**overrides) -> dict:
    """The Test section's form values for a small grid (one embedding, no checkpoints), as the tab sends them:
    numbers arrive from gradio as floats."""
    values = {
        "embedding": "tok", "checkpoints": "none", "strengths": "1", "mode": "emphasis", "baseline": False,
        "prompts": "[name]", "x": "strength", "y": "prompt", "z": "checkpoint", "negative_prompt": "",
        "sampler_name": "", "steps": 2.0, "cfg_scale": 7, "width": 8.0, "height": 8.0, "seed": 4.0,
        "max_images": 10.0, "scores": False,
    }  # fmt: skip
    values.update(overrides)
    return values
