"""The loss curve SVG."""

import math
import xml.etree.ElementTree as ET

import pytest

from lib_ti.ui.plot import loss_svg, smooth

PLACEHOLDER = "The loss curve appears after two steps."


def polylines(svg):
    root = ET.fromstring(svg)
    return [el for el in root.iter() if el.tag.endswith("polyline")]


def points_of(line):
    return [tuple(map(float, p.split(","))) for p in line.get("points").split()]


@pytest.mark.parametrize("losses", [[], [(1, 0.5)], [(1, float("nan")), (2, 0.3)], [(1, float("inf")), (2, 0.1)]])
def test_placeholder_with_fewer_than_two_points(losses):
    svg = loss_svg(losses)
    assert PLACEHOLDER in svg
    assert "<polyline" not in svg
    ET.fromstring(svg)  # well-formed


def test_two_polylines_and_last_smoothed_value():
    losses = [(step, 0.5 / step) for step in range(1, 21)]
    svg = loss_svg(losses)
    assert PLACEHOLDER not in svg
    lines = polylines(svg)
    assert len(lines) == 2
    assert all(len(points_of(line)) == 20 for line in lines)
    last = smooth([v for _, v in losses])[-1]
    assert f"smoothed {last:.4f}" in svg
    assert "step 1<" in svg and "step 20<" in svg


def test_points_fit_the_canvas():
    losses = [(step, math.sin(step) + 2) for step in range(100, 200, 3)]
    svg = loss_svg(losses, width=300, height=120)
    root = ET.fromstring(svg)
    assert root.get("width") == "300" and root.get("height") == "120"
    for line in polylines(svg):
        pts = points_of(line)
        assert all(0 <= x <= 300 and 0 <= y <= 120 for x, y in pts)
        xs = [x for x, _ in pts]
        assert xs == sorted(xs)
    raw = points_of(polylines(svg)[0])
    hi_index = max(range(len(losses)), key=lambda i: losses[i][1])
    assert raw[hi_index][1] == min(y for _, y in raw)  # the highest loss is drawn at the top


def test_nan_and_inf_values_skipped():
    losses = [(1, 1.0), (2, float("nan")), (3, 0.8), (4, float("inf")), (5, -float("inf")), (6, 0.6)]
    svg = loss_svg(losses)
    assert "nan" not in svg.lower() and "inf" not in svg.lower()
    lines = polylines(svg)
    assert len(lines) == 2
    assert all(len(points_of(line)) == 3 for line in lines)
    assert f"smoothed {smooth([1.0, 0.8, 0.6])[-1]:.4f}" in svg


def test_accepts_lists_from_json():
    svg = loss_svg([[1.0, 0.3], [2.0, 0.2], [3.0, 0.25]])
    assert len(polylines(svg)) == 2
    assert "step 3<" in svg


def test_flat_loss_does_not_divide_by_zero():
    svg = loss_svg([(1, 0.5), (2, 0.5), (3, 0.5)])
    assert len(polylines(svg)) == 2
    assert "smoothed 0.5000" in svg


def test_smooth_is_bias_corrected():
    assert smooth([2.0]) == pytest.approx([2.0])
    assert smooth([1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 1.0])
    values = smooth([1.0, 0.0], beta=0.5)
    assert values == pytest.approx([1.0, (0.5 * 0.5) / (1 - 0.25)])
