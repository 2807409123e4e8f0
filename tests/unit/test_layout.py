"""The library's core must import without any WebUI: only lib_ti.hosts may touch ``modules``."""

import importlib
import pkgutil
import subprocess
import sys

import lib_ti


def core_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(lib_ti.__path__, "lib_ti."):
        if not info.name.startswith("lib_ti.hosts."):
            names.append(info.name)
    return names


def test_core_imports_without_webui():
    code = (
        "import importlib, sys\n"
        "sys.modules['modules'] = None  # any 'import modules' now fails\n"
        f"for name in {core_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_core_covers_every_folder():
    names = core_modules()
    for folder in ("training", "embeddings", "grid", "jobs", "ui", "api"):
        assert any(n.startswith(f"lib_ti.{folder}.") for n in names), folder


def test_webui_kind_without_forge_is_a1111(monkeypatch):
    hosts = importlib.import_module("lib_ti.hosts")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "modules_forge" else real(name, *a))
    assert hosts.webui_kind() == "a1111"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    assert hosts.webui_kind() == "forge"
