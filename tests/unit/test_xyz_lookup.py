"""The live X/Y/Z test finds TI Trainer's axes by their labels, wherever other extensions put theirs."""

from __future__ import annotations

import pytest

from helpers import xyz_axis_indices


def _info(choices, img2img=False):
    return {"name": "x/y/z plot", "is_img2img": img2img, "args": [{"label": "X type", "choices": choices}]}


def test_our_axes_are_found_by_label_not_by_position():
    ours = ["TI: strength", "TI: checkpoint"]
    # ControlNet-like axes after ours, and img2img's list listed first with other indices
    txt2img = ["Nothing", "Seed", *ours, "[ControlNet] Weight", "[Hypertile] VAE Enabled"]
    infos = [_info(["Nothing", *ours], img2img=True), _info(txt2img)]
    assert xyz_axis_indices(infos, ours) == [2, 3]
    pairs = [[c, c] for c in txt2img]  # gradio 4 (Forge) lists choices as (label, value) pairs
    assert xyz_axis_indices([_info(pairs)], ours) == [2, 3]
    with pytest.raises(AssertionError, match="TI: strength"):
        xyz_axis_indices([_info(["Nothing"])], ours)
