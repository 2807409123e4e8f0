"""The API follows the WebUI's rules: only with its API on, with its --api-auth credentials; the tab's route asks
for the page's own login."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient

from lib_ti.api.access import (
    access_from_cmd_opts,
    api_access,
    api_dependencies,
    basic_auth,
    parse_credentials,
    ui_login,
)
from lib_ti.api.routes import create_router, create_ui_router
from lib_ti.jobs.manager import JobManager


@pytest.mark.parametrize(
    "api, nowebui, auth, enabled, users",
    [
        (False, False, None, False, {}),  # the WebUI's API is off: so is ours, even with --api-auth
        (False, False, "a:b", False, {}),
        (True, False, None, True, {}),
        (False, True, None, True, {}),  # --nowebui is the API alone
        (True, False, "a:b,c:d:e", True, {"a": "b", "c": "d:e"}),
        (False, True, "a:b", True, {"a": "b"}),
    ],
)
def test_the_rule(api, nowebui, auth, enabled, users):
    access = api_access(api, nowebui, auth)
    assert access.enabled is enabled and access.users == users
    assert bool(access.reason)


def test_cmd_opts_like_values_and_a_malformed_auth_locks_the_routes():
    assert access_from_cmd_opts(SimpleNamespace(api=True, nowebui=False, api_auth="u:p")).users == {"u": "p"}
    assert not access_from_cmd_opts(SimpleNamespace()).enabled  # an older WebUI without the attributes
    locked = api_access(True, False, "nocolon")
    assert locked.enabled and locked.users and "no user:password" in locked.reason
    app = FastAPI()
    app.include_router(create_router(JobManager(), None, lambda: None, lambda: None, api_dependencies(locked)))
    client = TestClient(app)
    assert client.get("/ti-trainer/v1/version").status_code == 401
    assert client.get("/ti-trainer/v1/version", auth=("", "")).status_code == 401


def test_parse_credentials_like_the_webui():
    assert parse_credentials("alice:secret, bob:p:w") == {"alice": "secret", "bob": "p:w"}
    assert parse_credentials("") == {} and parse_credentials(None) == {}


def test_basic_auth_guards_every_api_route():
    app = FastAPI()
    access = api_access(True, False, "alice:secret")
    app.include_router(create_router(JobManager(), None, lambda: None, lambda: None, api_dependencies(access)))
    client = TestClient(app)
    for method, path in [
        ("get", "/ti-trainer/v1/version"),
        ("post", "/ti-trainer/v1/train"),
        ("post", "/ti-trainer/v1/inspect"),
        ("get", "/ti-trainer/v1/runs"),
        ("post", "/ti-trainer/v1/queue/resume"),
    ]:
        assert getattr(client, method)(path).status_code == 401, path
    assert client.get("/ti-trainer/v1/version", auth=("alice", "wrong")).status_code == 401
    assert client.get("/ti-trainer/v1/version", auth=("alice", "secret")).status_code == 200


def test_basic_auth_dependency_alone():
    app = FastAPI()
    router = APIRouter(dependencies=[basic_auth("alice:secret")])
    router.add_api_route("/x", lambda: {"ok": True})
    app.include_router(router)
    client = TestClient(app)
    assert client.get("/x").status_code == 401
    assert client.get("/x", auth=("alice", "secret")).json() == {"ok": True}


def test_the_tabs_loss_curve_asks_for_the_pages_login():
    app = FastAPI()
    app.include_router(create_ui_router(JobManager()))
    client = TestClient(app)
    assert client.get("/ti-trainer/ui/jobs/current/loss.svg").status_code == 200  # no --gradio-auth: open page
    app.auth, app.tokens = {"admin": "pw"}, {"tok123": "admin"}  # what gradio's App holds with --gradio-auth
    assert client.get("/ti-trainer/ui/jobs/current/loss.svg").status_code == 401
    client.cookies.set("access-token", "forged")
    assert client.get("/ti-trainer/ui/jobs/current/loss.svg").status_code == 401
    client.cookies.set("access-token", "tok123")
    response = client.get("/ti-trainer/ui/jobs/current/loss.svg")
    assert response.status_code == 200 and response.text.startswith("<svg")


def test_ui_login_is_a_dependency():
    app = FastAPI()
    app.auth, app.tokens = {"a": "b"}, {}
    app.add_api_route("/y", lambda: {}, dependencies=[Depends(ui_login)])
    assert TestClient(app).get("/y").status_code == 401
