"""Against a real A1111 or Forge (see test_webui.py for the environment): what a grid cell's infotext reproduces, the
WebUI's own pages while a training runs, previews, and runs kept apart."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image

from helpers import make_dataset
from test_webui import MODELS, URL, cleanup, load_model, wait_for

pytestmark = [
    pytest.mark.webui,
    pytest.mark.skipif(not URL, reason="integration tests need a running WebUI: set TI_TRAINER_WEBUI_URL"),
]


def train(http, data, token, **kw):
    body = {"train_data_dir": data, "token_string": token, "resolution": 64, "learning_rate": "0.05", **kw}
    response = http.post(f"{URL}/ti-trainer/v1/train", json=body)
    assert response.status_code == 200, response.text
    return response.json()["job_id"]


def b64_file(path):
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def txt2img_from_infotext(http, png_path):
    """What a user gets from PNG Info → Send to txt2img → Generate."""
    params = http.post(f"{URL}/sdapi/v1/png-info", json={"image": b64_file(png_path)}).json()["parameters"]
    body = {
        "prompt": params["Prompt"],
        "negative_prompt": params.get("Negative prompt", ""),
        "seed": int(params["Seed"]),
        "steps": int(params["Steps"]),
        "cfg_scale": float(params["CFG scale"]),
        "width": int(params["Size-1"]),
        "height": int(params["Size-2"]),
        "sampler_name": params["Sampler"],
        "scheduler": params.get("Schedule type", "Automatic"),
    }
    out = http.post(f"{URL}/sdapi/v1/txt2img", json=body, timeout=600).json()
    return params["Prompt"], Image.open(io.BytesIO(base64.b64decode(out["images"][0])))


def max_diff(a, b):
    return int(np.abs(np.asarray(a.convert("RGB"), int) - np.asarray(b.convert("RGB"), int)).max())


def cards_page_load(http) -> int:
    """The gradio function that fills txt2img's Textual Inversion cards."""
    config = http.get(f"{URL}/config").json()
    ids = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    cards = "txt2img_textual_inversion_cards_html"
    return next(
        i
        for i, d in enumerate(config["dependencies"])
        if not d["inputs"] and cards in [ids.get(o) for o in d["outputs"]]
    )


@pytest.mark.parametrize("mode", ["emphasis", "vectors"])
def test_every_grid_cells_infotext_reproduces_it_in_txt2img(http, tmp_path, mode):
    load_model(http, MODELS[0] if MODELS else None)
    token = f"tirepro{int(time.time() * 1000) % 10**8}"
    data = make_dataset(str(tmp_path / "data"), count=2, caption=token)
    try:
        job = wait_for(http, train(http, data, token, max_train_steps=4, save_every_n_steps=2))
        assert job["state"] == "done", job
        grid = http.post(
            f"{URL}/ti-trainer/v1/grid",
            json={"embedding": token, "strengths": "0.8, 1.3", "mode": mode, "checkpoints": "all", "steps": 3,
                  "prompts": [f"beautiful {token} artwork"], "width": 64, "height": 64, "seed": 5},
            timeout=600,
        ).json()  # fmt: skip
        assert not grid["notes"] and grid["cells"][0]["prompt"] == "beautiful artwork"  # its name marks its place
        http.post(f"{URL}/sdapi/v1/refresh-embeddings")  # what lives only in memory is gone now
        for cell in (c for c in grid["cells"] if c["strength"] != "without"):
            prompt, image = txt2img_from_infotext(http, cell["path"])
            assert max_diff(image, Image.open(cell["path"])) <= 1, (cell["checkpoint"], cell["strength"], prompt)
    finally:
        cleanup(token)


def test_extra_networks_pages_load_while_training_and_previews_reproduce(http, tmp_path):
    token = f"tipage{int(time.time() * 1000) % 10**8}"
    data = make_dataset(str(tmp_path / "data"), count=2, caption=token)
    page_load = None if http.kind == "forge" else cards_page_load(http)  # gradio 4 (Forge) has no /run/predict
    try:
        job_id = train(http, data, token, max_train_steps=12, seed=-1, sample_every_n_steps=3, sample_steps=3)
        while (job := http.get(f"{URL}/ti-trainer/v1/jobs/{job_id}").json())["step"] < 1 and job["state"] == "running":
            time.sleep(0.5)
        if page_load is not None:
            response = http.post(f"{URL}/run/predict", json={"fn_index": page_load, "data": [], "session_hash": token})
            assert response.status_code == 200, response.text  # was a TypeError: the trained embedding had no file
        http.post(f"{URL}/sdapi/v1/refresh-embeddings")  # a reload while training must not end it silently
        job = wait_for(http, job_id)
        assert job["state"] == "done" and job["step"] == 12, job
        preview = next(p for p in job["samples"] if p.endswith("-000003-0.png"))
        prompt, image = txt2img_from_infotext(http, preview)
        assert prompt == f"{token}-3" and max_diff(image, Image.open(preview)) <= 1
    finally:
        cleanup(token)


def test_training_again_moves_the_earlier_run_aside(http, tmp_path):
    token = f"tiapart{int(time.time() * 1000) % 10**8}"
    data = make_dataset(str(tmp_path / "data"), count=2, caption=token)
    try:
        assert wait_for(http, train(http, data, token, max_train_steps=6, save_every_n_steps=2))["state"] == "done"
        job = wait_for(http, train(http, data, token, max_train_steps=2, save_every_n_steps=2, overwrite=True))
        assert job["state"] == "done" and any("moved to" in m for m in job["messages"]), job["messages"]
        grid = http.post(
            f"{URL}/ti-trainer/v1/grid",
            json={"embedding": token, "checkpoints": "all", "strengths": "1", "baseline": False, "steps": 1,
                  "prompts": [token], "width": 64, "height": 64, "save": False},
        ).json()  # fmt: skip
        assert [c["checkpoint"] for c in grid["cells"]] == ["final"]  # not steps 4 and 6 of the earlier run
    finally:
        cleanup(token)
