"""The dataset preview: the API route and the tab's HTML show images, repeats, buckets and steps before training."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from helpers import FolderHost
from lib_ti.api.routes import create_router
from lib_ti.errors import UserError
from lib_ti.jobs.manager import JobManager
from lib_ti.ui.dataset_preview import preview_action, preview_html
from lib_ti.ui.form import FIELDS, config_to_values, values_to_dict
from lib_ti.training.config import parse_config
from test_kohya_layout import kohya_folder


class _NoModel:
    @property
    def native_resolution(self):
        raise UserError("No Stable Diffusion model is loaded.")


def client(tmp_path, model_factory):
    app = FastAPI()
    app.include_router(create_router(JobManager(), FolderHost(str(tmp_path)), model_factory, lambda: None))
    return TestClient(app)


def test_preview_route_counts_like_kohya_without_a_model(tmp_path):
    folder = kohya_folder(str(tmp_path), count=5, repeats=10, size=(64, 64))

    def no_model():
        raise UserError("No Stable Diffusion model is loaded.")

    body = {"train_data_dir": folder, "token_string": "mystyle", "train_batch_size": 4, "max_train_epochs": 2,
            "resolution": 64, "caption_extension": ".caption", "caption_source": "captions"}  # fmt: skip
    response = client(tmp_path, no_model).post("/ti-trainer/v1/dataset/preview", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["images_count"], data["images_with_repeats"], data["batches_per_epoch"]) == (5, 50, 13)
    assert (data["steps_per_epoch"], data["max_train_steps"], data["epochs"]) == (13, 26, 2)
    assert data["images"][0]["repeats"] == 10 and data["images"][0]["bucket"] == [64, 64]
    assert data["images"][0]["example_prompt"].startswith("mystyle")
    assert data["datasets"][0]["buckets"] == [{"width": 64, "height": 64, "images": 5, "with_repeats": 50,
                                               "batches": 13}]  # fmt: skip


def test_preview_route_bad_folder_is_a_422(tmp_path):
    response = client(tmp_path, _NoModel).post(
        "/ti-trainer/v1/dataset/preview", json={"train_data_dir": str(tmp_path / "nope"), "token_string": "a"}
    )
    assert response.status_code == 422 and "is not a folder" in response.json()["detail"]["message"]


def test_preview_html_and_the_tab_action(tmp_path):
    folder = kohya_folder(str(tmp_path), count=2, repeats=3, size=(64, 64))
    config = parse_config({"train_data_dir": folder, "token_string": "mystyle", "max_train_epochs": 1}).config
    values = config_to_values(config)
    html = preview_action(values_to_dict, lambda: 64)(*values)
    assert "2 image(s), 6 with repeats" in html and "3_mystyle" in html and "3 steps in all" not in html
    assert "6 steps in all" in html
    bad = values_to_dict(values)
    bad["train_data_dir"] = str(tmp_path / "missing")
    error = preview_action(lambda v: bad, lambda: 64)(*values)
    assert "ti-trainer-error" in error and "is not a folder" in error
    assert len(values) == len(FIELDS)


def test_preview_html_escapes_captions():
    data = {"images_count": 1, "images_with_repeats": 1, "batches_per_epoch": 1, "steps_per_epoch": 1,
            "max_train_steps": 1, "explanation": "x", "notes": [], "datasets": [],
            "images": [{"path": "/a", "name": "a.png", "repeats": 1, "bucket": [64, 64], "caption": "<b>",
                        "example_prompt": ""}]}  # fmt: skip
    html = preview_html(data)
    assert "&lt;b&gt;" in html and "caption dropout" in html
