"""The names ``scripts/`` uses, bound to one WebUI's embedding database and model adapter.

Each WebUI package calls :func:`bind` once and exports what it returns, so the glue sees the same surface
whichever WebUI runs (tests/unit/test_layout.py checks that the packages export the same names).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from lib_ti.hosts.common import grid, xyz
from lib_ti.hosts.common.host import WebUIHost
from lib_ti.hosts.common.inspection import WebUIInspection
from lib_ti.hosts.common.store import EmbeddingStore


class Surface(NamedTuple):
    """In the order each WebUI package unpacks it."""

    WebUIHost: type
    WebUIInspection: Callable[[str], WebUIInspection]
    grid_after_training: Callable[..., list[str]]
    run_grid_queued: Callable[..., object]
    add_xyz_axes: Callable[[], str]


def bind(store: EmbeddingStore, model_class: type) -> Surface:
    class Host(WebUIHost):
        pass

    Host.store, Host.model_class = store, model_class
    Host.__name__ = Host.__qualname__ = "WebUIHost"

    def inspection(run_root: str) -> WebUIInspection:
        return WebUIInspection(run_root, store, model_class)

    def grid_after_training(final_path: str, run_root: str, checkpoints: str, owns_state: bool) -> list[str]:
        return grid.grid_after_training(store, final_path, run_root, checkpoints, owns_state)

    def run_grid_queued(request, run_root: str, owns_state: bool, should_stop=lambda: False):
        return grid.run_grid_queued(store, request, run_root, owns_state, should_stop)

    def add_xyz_axes() -> str:
        return xyz.add_xyz_axes(store, lambda: Host(owns_state=False).run_root())

    return Surface(Host, inspection, grid_after_training, run_grid_queued, add_xyz_axes)
