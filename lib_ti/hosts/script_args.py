"""Every script's default arguments for txt2img, built once per script runner, as the WebUI's own API does.

Building them means calling each script's ``ui()``, which creates gradio components, and some extensions
(ControlNet) append to class-level lists each time: doing it per grid request made memory grow with every request.
The WebUI's API builds them once when it starts; here they are built on first use and kept as long as the runner
and its scripts are the same (a UI reload makes new ones, and so new defaults).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

ScriptArgs = tuple[list, dict[str, int]]

_built: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signature(runner: Any) -> tuple:
    return tuple((id(s), s.args_from, s.args_to) for s in runner.scripts)


@contextlib.contextmanager
def _outside_event_listener() -> Iterator[None]:
    """Inside an event handler (the tab's Generate grid), gradio 4 makes a new component only an update, with no
    ``value``: the scripts' controls are made as at start-up instead. Gradio 3 (A1111) has no such context."""
    try:
        from gradio.context import LocalContext
    except ImportError:
        yield
        return
    flag = getattr(LocalContext, "in_event_listener", None)
    token = flag.set(False) if flag is not None else None
    try:
        yield
    finally:
        if token is not None:
            flag.reset(token)


def build_script_args(runner: Any) -> ScriptArgs:
    """Every script's UI defaults, and where the API's field names (seed, steps, sampler_name…) sit among them,
    since always-on scripts set those fields from their own arguments."""
    import gradio as gr

    args: list = [None] * max([1] + [s.args_to for s in runner.scripts])
    args[0] = 0
    positions: dict[str, int] = {}
    with _outside_event_listener(), gr.Blocks():
        for script in runner.scripts:
            controls = script.ui(script.is_img2img)
            if not controls:
                continue
            args[script.args_from : script.args_to] = [c.value for c in controls]
            if script.alwayson:
                for paste in getattr(script, "infotext_fields", None) or []:
                    api_name = getattr(paste, "api", None)
                    index = next((i for i, c in enumerate(controls) if c is getattr(paste, "component", None)), None)
                    if api_name and index is not None:
                        positions[api_name] = script.args_from + index
    return args, positions


def default_script_args(runner: Any) -> ScriptArgs:
    """The defaults of ``runner``'s scripts, built on first use; callers copy the list before changing it."""
    signature = _signature(runner)
    cached = _built.get(runner)
    if cached is None or cached[0] != signature:
        cached = (signature, build_script_args(runner))
        _built[runner] = cached
    return cached[1]
