"""Against live WebUIs: the API follows the WebUI's flags, a kill -9 loses nothing, Reload UI keeps jobs and queue.

Each test skips unless its variables are set:

- TI_TRAINER_WEBUI_URL (+ TI_TRAINER_API_AUTH=user:pass when it runs with --api-auth): a WebUI with --api.
- TI_TRAINER_NOAPI_URL (+ TI_TRAINER_GRADIO_AUTH=user:pass): a WebUI started without --api (and with --gradio-auth).
- TI_TRAINER_KILL_CMD and TI_TRAINER_START_CMD: shell commands that kill -9 the TI_TRAINER_WEBUI_URL WebUI and
  start it again (returning once it answers), for the crash test.
- TI_TRAINER_RELOAD=1: allow the Reload UI test (it reloads that WebUI's UI through its own Settings button).
- TI_TRAINER_DATA: an image folder to train on (else a tiny one is made).
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from helpers import make_dataset

URL = os.environ.get("TI_TRAINER_WEBUI_URL", "").rstrip("/")
AUTH = os.environ.get("TI_TRAINER_API_AUTH", "")
NOAPI_URL = os.environ.get("TI_TRAINER_NOAPI_URL", "").rstrip("/")
GRADIO_AUTH = os.environ.get("TI_TRAINER_GRADIO_AUTH", "")
KILL, START = os.environ.get("TI_TRAINER_KILL_CMD", ""), os.environ.get("TI_TRAINER_START_CMD", "")
RELOAD = os.environ.get("TI_TRAINER_RELOAD", "") == "1"

pytestmark = pytest.mark.webui
needs_api = pytest.mark.skipif(not URL, reason="set TI_TRAINER_WEBUI_URL to a WebUI started with --api")


@pytest.fixture(scope="module")
def http():
    import requests

    session = requests.Session()
    if AUTH:
        session.auth = tuple(AUTH.split(":", 1))
    return session


@pytest.fixture
def data(tmp_path):
    return os.environ.get("TI_TRAINER_DATA") or make_dataset(str(tmp_path / "data"), count=3, size=(64, 64))


def job(http, job_id):
    return http.get(f"{URL}/ti-trainer/v1/jobs/{job_id}", timeout=30).json()


def wait_step(http, job_id, step, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        current = job(http, job_id)
        if current["step"] >= step or current["state"] not in ("queued", "running"):
            return current
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not reach step {step}")


def interrupt_and_wait(http, job_id):
    http.post(f"{URL}/ti-trainer/v1/jobs/{job_id}/interrupt", timeout=30)
    deadline = time.time() + 300
    while job(http, job_id)["state"] in ("queued", "running") and time.time() < deadline:
        time.sleep(1)


def train(http, data, name, steps=400):
    body = {
        "train_data_dir": data,
        "token_string": name,
        "max_train_steps": steps,
        "save_every_n_steps": 5,
        "resolution": 64,
        "seed": 1,
    }
    response = http.post(f"{URL}/ti-trainer/v1/train", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["job_id"]


@needs_api
@pytest.mark.skipif(not AUTH, reason="set TI_TRAINER_API_AUTH for a WebUI started with --api-auth")
def test_api_auth_is_required(http):
    import requests

    for path in ("/ti-trainer/v1/version", "/ti-trainer/v1/runs", "/ti-trainer/v1/queue"):
        assert requests.get(URL + path, timeout=30).status_code == 401, path
        assert requests.get(URL + path, auth=("nobody", "wrong"), timeout=30).status_code == 401, path
        assert http.get(URL + path, timeout=30).status_code == 200, path
    assert requests.post(URL + "/ti-trainer/v1/train", json={}, timeout=30).status_code == 401


@pytest.mark.skipif(not NOAPI_URL, reason="set TI_TRAINER_NOAPI_URL to a WebUI started without --api")
def test_without_api_the_routes_are_not_there_and_the_tabs_curve_asks_for_the_login():
    import requests

    for method, path in [("get", "/ti-trainer/v1/version"), ("post", "/ti-trainer/v1/train")]:
        assert getattr(requests, method)(NOAPI_URL + path, timeout=30).status_code == 404, path
    curve = NOAPI_URL + "/ti-trainer/ui/jobs/current/loss.svg"
    if GRADIO_AUTH:
        assert requests.get(curve, timeout=30).status_code == 401
        user, password = GRADIO_AUTH.split(":", 1)
        page = requests.Session()
        page.post(NOAPI_URL + "/login", data={"username": user, "password": password}, timeout=30)
        assert page.get(curve, timeout=30).status_code == 200
    else:
        assert requests.get(curve, timeout=30).status_code == 200


@needs_api
@pytest.mark.skipif(not (KILL and START), reason="set TI_TRAINER_KILL_CMD and TI_TRAINER_START_CMD")
def test_kill_9_leaves_the_embedding_and_the_run_continues(http, data):
    name = f"crash{int(time.time()) % 10**6}"
    job_id = train(http, data, name)
    assert wait_step(http, job_id, 12)["state"] == "running"
    subprocess.run(KILL, shell=True, check=True)
    subprocess.run(START, shell=True, check=True, timeout=900)

    loaded = http.get(f"{URL}/sdapi/v1/embeddings", timeout=60).json()["loaded"]
    assert name in loaded  # whole, at its last checkpoint
    runs = http.get(f"{URL}/ti-trainer/v1/runs", params={"resumable": True}, timeout=30).json()["runs"]
    [run] = [r for r in runs if r["name"] == name]
    assert run["state"] == "interrupted" and run["checkpoint_step"] >= 10
    response = http.post(f"{URL}/ti-trainer/v1/runs/continue", json={"name": name}, timeout=120)
    assert response.status_code == 200, response.text
    resumed = wait_step(http, response.json()["job_id"], run["checkpoint_step"] + 1)
    assert any(f"at step {run['checkpoint_step']}" in m for m in resumed["messages"]), resumed["messages"]
    assert any("Loaded the optimizer state" in m for m in resumed["messages"])
    interrupt_and_wait(http, resumed["id"])


def reload_ui(http):
    """Press Settings → Reload UI through the page's own event, then wait for the new UI."""
    config = http.get(f"{URL}/config", timeout=30).json()
    [button] = [c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "settings_restart_gradio"]
    [fn_index] = [i for i, d in enumerate(config["dependencies"]) if button in d["targets"]]
    try:
        http.post(f"{URL}/run/predict", json={"fn_index": fn_index, "data": [], "session_hash": "ti"}, timeout=30)
    except Exception:
        pass  # the server may close the connection as it goes down
    time.sleep(5)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if http.get(f"{URL}/ti-trainer/v1/version", timeout=5).status_code == 200:
                return
        except Exception:
            pass
        time.sleep(2)
    raise AssertionError("the WebUI did not come back after Reload UI")


@needs_api
@pytest.mark.skipif(not RELOAD, reason="set TI_TRAINER_RELOAD=1 to reload that WebUI's UI")
def test_reload_ui_keeps_the_job_says_it_was_interrupted_and_it_continues(http, data):
    name = f"reload{int(time.time()) % 10**6}"
    job_id = train(http, data, name)
    wait_step(http, job_id, 7)
    reload_ui(http)
    after = job(http, job_id)  # the job record survived the scripts' second load
    assert after["state"] == "interrupted" and after["resumable"], after
    assert any("runs/continue" in m for m in after["messages"])
    response = http.post(f"{URL}/ti-trainer/v1/runs/continue", json={"name": name}, timeout=120)
    assert response.status_code == 200, response.text
    resumed = response.json()["job_id"]
    second = http.post(f"{URL}/ti-trainer/v1/train", json={"train_data_dir": data, "token_string": "x"}, timeout=60)
    assert second.status_code == 409  # the guard still sees the one job of this process
    interrupt_and_wait(http, resumed)
    assert job(http, resumed)["state"] == "interrupted"
