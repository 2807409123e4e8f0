"""What it takes to backpropagate through Forge's model, which was built for inference only.

Forge loads every weight under ``torch.inference_mode`` (and re-creates them that way when it moves or re-patches a
model), its UNet blocks add residuals in place (``x += n``), and its default CPU attention is not the one to train
with. Each helper here changes that only while training runs, without changing any value.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys
from typing import Iterable, Iterator

import torch
from torch.overrides import TorchFunctionMode

UNET_MODULE = "backend.nn.unet"
_IN_PLACE = {"add_": torch.add, "sub_": torch.sub, "mul_": torch.mul, "div_": torch.div}
RELEASE_EVERY = 256 << 20  # bytes of CPU weights copied between hand-backs of the freed originals


def ordinary_weights(modules: Iterable[torch.nn.Module]) -> int:
    """Swap inference-mode weights and buffers for ordinary tensors with the same values; returns how many.

    Autograd refuses to save inference tensors for backward. The ordinary ones work in inference as well, so they
    stay; Forge swaps them back on its own when it next moves or re-patches the model, and training swaps again.
    Weights in system memory are copied one at a time and the freed originals handed back to the system as it
    goes: the C allocator keeps freed memory otherwise, and with SDXL on the CPU (12 GB of weights) the copy
    alone would need 5 GB more than the model at its peak.
    """
    swapped: dict[int, torch.Tensor] = {}
    copied = 0
    with torch.inference_mode(False), torch.no_grad():
        for module in modules:
            for sub in module.modules():
                for table, make in ((sub._parameters, _as_parameter), (sub._buffers, torch.Tensor.clone)):
                    for name, tensor in table.items():
                        if tensor is None or not tensor.is_inference():
                            continue
                        if id(tensor) not in swapped:
                            swapped[id(tensor)] = make(tensor)
                            copied += tensor.nbytes if tensor.device.type == "cpu" else 0
                        table[name] = swapped[id(tensor)]
                        if copied >= RELEASE_EVERY:
                            release_freed_memory()
                            copied = 0
    if swapped:
        release_freed_memory()
    return len(swapped)


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (Windows, macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


def release_freed_memory() -> None:
    """Hand memory that freed tensors left in the C allocator back to the system; nothing where that is unknown."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _as_parameter(tensor: torch.Tensor) -> torch.nn.Parameter:
    return torch.nn.Parameter(tensor.clone(), requires_grad=False)


class _OutOfPlaceInUnet(TorchFunctionMode):
    """``x += y`` written in Forge's UNet file becomes ``x = x + y``: the same value, and autograd can use it.

    Only in-place arithmetic called directly from that file is changed; there it always comes from an augmented
    assignment, whose result Python rebinds, so nothing else sees the difference.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out_of_place = _IN_PLACE.get(getattr(func, "__name__", ""))
        if out_of_place is not None and sys._getframe(1).f_globals.get("__name__") == UNET_MODULE:
            return out_of_place(*args, **(kwargs or {})).to(args[0].dtype)
        return func(*args, **(kwargs or {}))


def _out_of_place(forward):
    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        with _OutOfPlaceInUnet():
            return forward(self, *args, **kwargs)

    return wrapper


@contextlib.contextmanager
def out_of_place_blocks(classes: list[type]) -> Iterator[None]:
    """The UNet blocks' ``_forward`` without in-place residual adds, also when checkpointing recomputes them."""
    saved = [(cls, cls.__dict__["_forward"]) for cls in classes]
    try:
        for cls, forward in saved:
            cls._forward = _out_of_place(forward)
        yield
    finally:
        for cls, forward in saved:
            cls._forward = forward


@contextlib.contextmanager
def pytorch_attention() -> Iterator[None]:
    """PyTorch's scaled-dot-product attention in the UNet while training: it has a fast backward pass, where
    Forge's CPU default (sub-quadratic attention) does not; the user's choice comes back afterwards."""
    from backend import attention
    from backend.nn import unet

    saved = unet.attention_function
    unet.attention_function = attention.attention_pytorch
    try:
        yield
    finally:
        unet.attention_function = saved
