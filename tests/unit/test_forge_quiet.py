"""Forge prints a line whenever a prompt uses an embedding: quiet while training encodes, never for the user."""

from __future__ import annotations

import importlib.util
import os
import threading
import types

import lib_ti.hosts

# no Forge needed: loaded from its file, since the package around it needs a running Forge
_PATH = os.path.join(os.path.dirname(lib_ti.hosts.__file__), "forge", "quiet.py")
_spec = importlib.util.spec_from_file_location("forge_quiet", _PATH)
quiet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quiet)


def _engine_like():
    """A module that prints as Forge's classic_engine does."""
    module = types.ModuleType("classic_engine_like")
    exec(
        "def encode(name):\n"
        "    print(f'[Textual Inversion] Used Embedding [{name}] in CLIP of [clip_l]')\n"
        "    print('something else')\n",
        module.__dict__,
    )
    return module


def test_the_used_embedding_line_is_dropped_only_while_training_encodes(capsys):
    engine = _engine_like()
    with quiet.without_lines(engine):
        engine.encode("mystyle")
        user = threading.Thread(target=engine.encode, args=("theirs",))  # a generation elsewhere still prints
        user.start()
        user.join()
    out = capsys.readouterr().out
    assert "[mystyle]" not in out and "[theirs]" in out and out.count("something else") == 2
    assert "print" not in engine.__dict__  # the builtin again
    engine.encode("after")
    assert "[after]" in capsys.readouterr().out
