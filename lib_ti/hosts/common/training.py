"""Training helpers both WebUIs' model adapters use: gradient checkpointing of their UNet blocks, and a digest
of the weights to show that training left them unchanged."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Iterable, Iterator

import torch
from torch.utils.checkpoint import checkpoint


def block_classes(module_names: Iterable[str], class_names: Iterable[str] = ("BasicTransformerBlock", "ResBlock")):
    """The UNet block classes that keep their work in ``_forward`` (the ones worth checkpointing)."""
    found = []
    for module_name in module_names:
        try:
            module = __import__(module_name, fromlist=["_"])
        except ImportError:
            continue
        for cls_name in class_names:
            cls = getattr(module, cls_name, None)
            if cls is not None and hasattr(cls, "_forward"):
                found.append(cls)
    return found


@contextlib.contextmanager
def checkpointing(enabled: bool, classes: list[type]) -> Iterator[None]:
    """Recompute block activations in backward: less memory, more compute. Only when asked."""
    if not enabled:
        yield
        return
    saved = [(cls, cls.forward) for cls in classes]
    try:
        for cls, _ in saved:
            cls.forward = lambda self, *args, **kwargs: checkpoint(self._forward, *args, use_reentrant=False, **kwargs)
        yield
    finally:
        for cls, forward in saved:
            cls.forward = forward


def weights_digest(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """A hash of every weight's value, to show that training left the model unchanged.

    Values, not storage: Forge turns its fp16 text encoder's embedding tables into fp32 at the first prompt, which
    changes no value (every fp16 number is exact in fp32)."""
    h = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        value = tensor.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        h.update(name.encode())
        h.update(value.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
