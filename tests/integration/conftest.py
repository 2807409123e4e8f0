"""The HTTP session every live-WebUI test uses (TI_TRAINER_WEBUI_URL)."""

from __future__ import annotations

import os

import pytest

URL = os.environ.get("TI_TRAINER_WEBUI_URL", "").rstrip("/")


@pytest.fixture(scope="module")
def http():
    import requests

    session = requests.Session()
    if os.environ.get("TI_TRAINER_API_AUTH"):  # a WebUI started with --api-auth user:pass
        session.auth = tuple(os.environ["TI_TRAINER_API_AUTH"].split(":", 1))
    try:
        session.get(f"{URL}/ti-trainer/v1/version", timeout=10).raise_for_status()
    except Exception as e:
        pytest.fail(f"TI_TRAINER_WEBUI_URL={URL} does not answer /ti-trainer/v1/version: {e}")
    session.post(f"{URL}/sdapi/v1/options", json={"ti_trainer_verify_model": True}, timeout=60).raise_for_status()
    options = session.get(f"{URL}/sdapi/v1/options", timeout=60).json()
    # which WebUI: Forge has forge_* settings; TI_TRAINER_WEBUI_KIND (a1111|forge) says so explicitly
    session.kind = os.environ.get("TI_TRAINER_WEBUI_KIND") or ("forge" if "forge_preset" in options else "a1111")
    return session
