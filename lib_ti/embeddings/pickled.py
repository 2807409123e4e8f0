"""Pickled embedding files (.pt, .bin) read without ever running code stored in them.

First torch's own weights-only loader; files it refuses for a type it does not know are read again with an
allow-list of the types the WebUI's safe unpickler itself lets through (``modules/safe.py`` in A1111 v1.10):
the 2022 A1111 and original textual_inversion files keep their vectors in a ``torch.nn.ParameterDict``, which
is read here as a plain dict of its tensors (no torch module is built from the file). torch 2.1 (the WebUI's)
has no ``add_safe_globals`` and current torch would build a real module, so the allow-list is this module's own
``find_class``; any other global makes the file "may hold code" and nothing in it runs.
"""

from __future__ import annotations

import collections
import os
import pickle
import warnings
from typing import Any

import numpy as np
import torch

from lib_ti.errors import UserError


class ForbiddenGlobal(pickle.UnpicklingError):
    """The file asks for a function or class outside the allow-list: it may hold code."""

    def __init__(self, module: str, name: str):
        self.where = f"{module}.{name}"
        super().__init__(f"global {self.where} is not allowed")


class PickledParameterDict(dict):
    """What a pickled ``torch.nn.ParameterDict`` holds: its tensors by name, nothing else of the module."""

    dump_patches = False  # torch's legacy (pre-zip) format compares a module's saved source with its class

    def __setstate__(self, state: Any) -> None:
        state = state if isinstance(state, dict) else {}
        params = state.get("_parameters") or {}
        order = list(state.get("_keys") or params)
        self.update((k, params[k]) for k in order if isinstance(params.get(k), torch.Tensor))


def _numpy_multiarray() -> Any:
    return getattr(getattr(np, "_core", None), "multiarray", None) or np.core.multiarray


def _allowed(module: str, name: str) -> Any:
    """The object a pickle may name: tensors, storages, plain containers and numpy values, as the WebUI allows."""
    if (module, name) == ("torch.nn.modules.container", "ParameterDict"):
        return PickledParameterDict
    if (module, name) == ("collections", "OrderedDict"):
        return collections.OrderedDict
    if module in ("__builtin__", "builtins") and name == "set":
        return set
    if module == "torch._utils" and name in (
        "_rebuild_tensor_v2",
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
    ):
        return getattr(torch._utils, name, None)
    if (module, name) == ("torch._utils", "_rebuild_device_tensor_from_numpy"):
        return _tensor_from_numpy
    if module == "torch" and isinstance(vars(torch).get(name), torch.dtype):  # vars: no lazy imports by name
        return vars(torch)[name]
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("scalar", "_reconstruct"):
        return getattr(_numpy_multiarray(), name)
    if module == "numpy" and name in ("dtype", "ndarray"):
        return getattr(np, name)
    if (module, name) == ("_codecs", "encode"):  # numpy's arrays and scalars carry their bytes as latin-1 text
        return _latin1_encode
    return None


def _tensor_from_numpy(data: np.ndarray, dtype: torch.dtype, device: Any, requires_grad: bool) -> torch.Tensor:
    """Tensors saved from devices without storages (Apple's MPS in 2022): rebuilt on the CPU, wherever they were."""
    tensor = torch.from_numpy(np.array(data)).to(dtype=dtype)
    tensor.requires_grad = requires_grad
    return tensor


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"unexpected text encoding {encoding!r}")
    return text.encode("latin1")


class AllowListUnpickler(pickle.Unpickler):
    """Every global the pickle names goes through here (GLOBAL, STACK_GLOBAL, INST, OBJ and EXT opcodes alike)."""

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed(module, name)
        if found is None:
            raise ForbiddenGlobal(module, name)
        return found


class _AllowListPickle:
    """The ``pickle_module`` torch.load uses for the file's objects (torch maps storage names itself)."""

    Unpickler = AllowListUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return AllowListUnpickler(file, **kwargs).load()


def _torch_load(path: str, **kwargs: Any) -> Any:
    # torch.serialization.load, not torch.load: the WebUI replaces the latter with its own checker, which refuses
    # files written by torch >= 2.6 and answers None instead of raising.
    return torch.serialization.load(path, map_location="cpu", **kwargs)


def load_pickled(path: str) -> Any:
    """The file's object, or a UserError that says plainly whether it is empty, damaged or may hold code."""
    label = os.path.basename(path)
    if os.path.getsize(path) == 0:
        raise UserError(f"{label} is empty (0 bytes): it holds no embedding.")
    try:
        return _torch_load(path, weights_only=True)
    except Exception:
        pass  # a type torch does not know, or a damaged file: the allow-list below tells which
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy format's "source code of class ... has changed"
            return _torch_load(path, weights_only=False, pickle_module=_AllowListPickle)
    except ForbiddenGlobal as e:
        raise UserError(
            f"{label} cannot be read safely (it may hold code, which is never run): it asks for {e.where}, "
            "which is not part of an embedding."
        ) from None
    except Exception as e:
        raise UserError(
            f"{label} is damaged: it is not a complete PyTorch file ({type(e).__name__}: {_short(e)}). "
            "Download or copy it again."
        ) from None


def _short(e: Exception) -> str:
    """The first sentence of an error: enough to tell a truncated file from one that is not PyTorch's."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else "no details"
    return text.split(". ")[0].rstrip(".")[:160]
