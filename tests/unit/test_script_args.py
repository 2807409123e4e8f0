"""Script defaults are built once per script runner: building them per grid request made memory grow."""

import contextlib
import contextvars
import sys
import types

import pytest

from lib_ti.hosts import script_args


class Control:
    def __init__(self, value):
        self.value = value


class Script:
    """A script whose ui() makes new controls each call, and counts the calls (ControlNet's grow a list)."""

    def __init__(self, args_from, values, alwayson=False):
        self.args_from, self.args_to = args_from, args_from + len(values)
        self.values, self.alwayson, self.is_img2img = values, alwayson, False
        self.calls = 0
        self.infotext_fields = []

    def ui(self, is_img2img):
        self.calls += 1
        controls = [Control(v) for v in self.values]
        if self.alwayson:
            self.infotext_fields = [types.SimpleNamespace(api="seed", component=controls[0])]
        return controls


class Runner:
    def __init__(self, scripts):
        self.scripts = scripts


@pytest.fixture(autouse=True)
def fake_gradio(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "gradio", types.SimpleNamespace(Blocks=contextlib.nullcontext))


def test_defaults_are_built_once_per_runner():
    seed, other = Script(1, [-1, "x"], alwayson=True), Script(3, [7])
    runner = Runner([seed, other])
    first = script_args.default_script_args(runner)
    for _ in range(20):
        assert script_args.default_script_args(runner) == first
    assert (seed.calls, other.calls) == (1, 1)
    assert first == ([0, -1, "x", 7], {"seed": 1})


def test_new_scripts_after_a_ui_reload_are_built_again():
    runner = Runner([Script(1, [1])])
    script_args.default_script_args(runner)
    runner.scripts = [Script(1, [2, 3])]
    assert script_args.default_script_args(runner)[0] == [0, 2, 3]
    assert script_args.default_script_args(Runner([Script(1, [4])]))[0] == [0, 4]


class EventContext:
    in_event_listener = contextvars.ContextVar("in_event_listener", default=False)


class Gradio4Control:
    """Like a gradio 4 component: made inside an event listener, it is only an update and has no value."""

    def __init__(self, value):
        if not EventContext.in_event_listener.get():
            self.value = value


def test_defaults_built_inside_a_gradio4_event_handler_have_their_values(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio.context", types.SimpleNamespace(LocalContext=EventContext))
    script = Script(1, [True, 5])
    script.ui = lambda is_img2img: [Gradio4Control(v) for v in script.values]
    token = EventContext.in_event_listener.set(True)  # the tab's Generate grid runs in gradio's event handler
    try:
        assert script_args.build_script_args(Runner([script]))[0] == [0, True, 5]
        assert EventContext.in_event_listener.get() is True  # gradio's own state is left as it was
    finally:
        EventContext.in_event_listener.reset(token)
