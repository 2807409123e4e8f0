"""Forge's model is built for inference only; the helpers that let training backpropagate through it."""

from __future__ import annotations

import importlib.util
import os
import types

import pytest
import torch

import lib_ti.hosts

# torch only: loaded from its file, since the package around it needs a running Forge
_PATH = os.path.join(os.path.dirname(lib_ti.hosts.__file__), "forge", "autograd.py")
_spec = importlib.util.spec_from_file_location("forge_autograd", _PATH)
autograd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(autograd)


def _unet_like_block():
    """A block written as Forge's UNet blocks are (in-place residual adds), in a module named as Forge's file."""
    source = (
        "import torch\n"
        "class Block(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.norm = torch.nn.LayerNorm(4)\n"
        "        self.proj = torch.nn.Linear(4, 4)\n"
        "    def forward(self, x):\n"
        "        return self._forward(x)\n"
        "    def _forward(self, x):\n"
        "        x = self.proj(x)\n"
        "        n = self.norm(x)\n"
        "        x += n\n"
        "        x *= 2\n"
        "        return x\n"
    )
    module = types.ModuleType(autograd.UNET_MODULE)
    exec(compile(source, "unet.py", "exec"), module.__dict__)
    return module.Block


def test_inference_weights_become_ordinary_and_keep_their_values():
    with torch.inference_mode():
        layer = torch.nn.Linear(4, 4)
        layer.register_buffer("ids", torch.arange(4))
    layer.alias = layer.weight  # a second owner of the same tensor (as Forge's TI wrapper holds the table)
    before = layer.weight.detach().clone()
    x = torch.randn(2, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="[Ii]nference"):
        layer(x).sum().backward()

    assert autograd.ordinary_weights([layer]) == 3
    assert not layer.weight.is_inference() and not layer.ids.is_inference()
    assert layer.alias is layer.weight and not layer.weight.requires_grad
    assert torch.equal(layer.weight, before)
    layer(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert autograd.ordinary_weights([layer]) == 0  # nothing left to swap


def test_in_place_residuals_backpropagate_with_the_same_values():
    Block = _unet_like_block()
    block = Block()
    x = torch.randn(3, 4, requires_grad=True)
    expected = block(x.detach().clone())
    with pytest.raises(RuntimeError, match="inplace"):
        block(x).sum().backward()

    with autograd.out_of_place_blocks([Block]):
        out = block(x)
        out.sum().backward()
    assert torch.allclose(out, expected)
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert Block._forward.__name__ == "_forward" and "wrapper" not in repr(Block.__dict__["_forward"])


def test_in_place_arithmetic_elsewhere_stays_in_place():
    Block = _unet_like_block()
    with autograd.out_of_place_blocks([Block]):
        with autograd._OutOfPlaceInUnet():
            t = torch.zeros(2)
            t.add_(1)
    assert torch.equal(t, torch.ones(2))


def test_freed_originals_go_back_to_the_system_while_swapping(monkeypatch):
    """SDXL on the CPU: 12 GB of weights copied; the C allocator would keep every freed original until the end."""
    calls = []
    monkeypatch.setattr(autograd, "_malloc_trim", lambda: calls.append)
    monkeypatch.setattr(autograd, "RELEASE_EVERY", 3 << 20)
    with torch.inference_mode():
        model = torch.nn.Sequential(*[torch.nn.Linear(512, 512) for _ in range(8)])  # 1 MB of weights each
    assert autograd.ordinary_weights([model]) == 16
    assert len(calls) >= 3 and calls[-1] == 0  # every 3 MB copied and once at the end, malloc_trim(0)
    calls.clear()
    assert autograd.ordinary_weights([model]) == 0 and calls == []  # nothing swapped, nothing to hand back


def test_handing_memory_back_is_safe_on_any_system():
    autograd.release_freed_memory()  # glibc here; elsewhere it does nothing
    assert autograd._malloc_trim() is None or callable(autograd._malloc_trim())
