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
