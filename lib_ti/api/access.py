"""Who may reach TI Trainer's HTTP routes: the WebUI's own rules, decided in one place.

The routes under ``/ti-trainer/v1/`` can read image folders, write run folders and inspect files, so they follow the
WebUI's API: they exist only when its API is on (``--api``, or ``--nowebui`` which is API only) and take the
``--api-auth`` credentials when those are set. The tab never needs them; the one thing its page fetches (the live
loss curve) is served on a UI route that asks for the same login as the WebUI's pages (``--gradio-auth``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from secrets import compare_digest
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials


@dataclass(frozen=True)
class ApiAccess:
    enabled: bool
    users: dict[str, str] = field(default_factory=dict)  # empty: no credentials asked
    reason: str = ""


def parse_credentials(text: str | None) -> dict[str, str]:
    """The WebUI's ``--api-auth`` format: ``user:pass,user2:pass2`` (a password may hold ':')."""
    users = {}
    for pair in (text or "").split(","):
        user, sep, password = pair.strip().partition(":")
        if sep and user:
            users[user] = password
    return users


def api_access(api: bool, nowebui: bool, api_auth: str | None) -> ApiAccess:
    """The rule, from the WebUI's command-line values (``cmd_opts.api``, ``.nowebui``, ``.api_auth``)."""
    if not (api or nowebui):
        return ApiAccess(False, reason="the WebUI's API is off (start it with --api to use /ti-trainer/v1/)")
    users = parse_credentials(api_auth)
    if api_auth and not users:
        # a malformed --api-auth must not open the routes: nobody can log in, as with the WebUI's own API
        return ApiAccess(True, {"": "\0unusable"}, "--api-auth holds no user:password pair")
    return ApiAccess(True, users, "credentials required (--api-auth)" if users else "open like the WebUI's API")


def access_from_cmd_opts(cmd_opts: Any) -> ApiAccess:
    return api_access(
        bool(getattr(cmd_opts, "api", False)),
        bool(getattr(cmd_opts, "nowebui", False)),
        getattr(cmd_opts, "api_auth", None),
    )


def basic_auth(users: dict[str, str] | str):
    """HTTP basic credentials as a route dependency (the scheme of the WebUI's ``--api-auth``)."""
    if isinstance(users, str):
        users = parse_credentials(users)

    def check(given: HTTPBasicCredentials = Depends(HTTPBasic())) -> bool:
        expected = users.get(given.username)
        if expected is None or not compare_digest(given.password.encode(), expected.encode()):
            raise HTTPException(
                status_code=401, detail="Incorrect username or password", headers={"WWW-Authenticate": "Basic"}
            )
        return True

    return Depends(check)


def api_dependencies(access: ApiAccess) -> list:
    return [basic_auth(access.users)] if access.users else []


def ui_login(request: Request) -> None:
    """A route the tab's page uses asks for the page's own login: gradio's session cookie when ``--gradio-auth``."""
    app = request.app
    if getattr(app, "auth", None) is None:
        return
    token = request.cookies.get("access-token") or request.cookies.get("access-token-unsecure")
    if token and token in (getattr(app, "tokens", None) or {}):
        return
    raise HTTPException(status_code=401, detail="Log in to the WebUI first.")
