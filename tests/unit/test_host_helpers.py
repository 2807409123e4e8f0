"""Helpers the WebUI adapters share that need no WebUI (lib_ti/hosts/common/training.py)."""

from __future__ import annotations

import importlib.util
import os

import torch

import lib_ti.hosts

_PATH = os.path.join(os.path.dirname(lib_ti.hosts.__file__), "common", "training.py")
_spec = importlib.util.spec_from_file_location("host_training", _PATH)
training = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(training)


def test_digest_sees_values_not_storage():
    table = torch.randn(5, 3).half()
    before = training.weights_digest([("emb.weight", table), ("ids", torch.arange(5))])
    # Forge turns its fp16 embedding tables into fp32 at the first prompt: no value changes
    assert training.weights_digest([("emb.weight", table.float()), ("ids", torch.arange(5))]) == before
    changed = table.clone()
    changed[0, 0] += 1
    assert training.weights_digest([("emb.weight", changed), ("ids", torch.arange(5))]) != before


def test_the_host_leaves_reloading_the_embedding_list_to_the_model_adapter(monkeypatch):
    """The adapter reloads the list when training ends (it put the token's vectors there); the host's end must not
    load every embedding file a second time."""
    import importlib
    import sys
    import types

    shared = types.SimpleNamespace(opts=types.SimpleNamespace(data={}), state=types.SimpleNamespace(), sd_model=None)
    fake = types.ModuleType("modules")
    fake.shared, fake.processing = shared, types.ModuleType("modules.processing")
    monkeypatch.setitem(sys.modules, "modules", fake)
    ours = ("lib_ti.hosts.common.host", "lib_ti.hosts.common.grid", "lib_ti.hosts.common.txt2img")
    try:
        host_module = importlib.import_module("lib_ti.hosts.common.host")
        reloads = []
        host = host_module.WebUIHost(owns_state=False)
        host.store = types.SimpleNamespace(reload_embeddings=lambda: reloads.append(1))
        job = types.SimpleNamespace(state="done", final_path="/e/x.safetensors", max_steps=2, messages=[])
        host.begin(job)
        host.end(job)
        assert reloads == [] and shared.state.job == "ti-trainer"
    finally:
        for name in ours:  # bound to the fake WebUI: never left for other tests
            sys.modules.pop(name, None)
