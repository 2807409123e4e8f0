"""The loss curve as a small SVG: raw loss faint, smoothed loss bold, step and loss ranges labelled."""

from __future__ import annotations

import html


def smooth(values: list[float], beta: float = 0.9) -> list[float]:
    """Bias-corrected exponential moving average, as training dashboards show it."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def loss_svg(losses: list[tuple[int, float]] | list[list[float]], width: int = 520, height: int = 180) -> str:
    points = [(int(s), float(v)) for s, v in losses if v == v and abs(v) != float("inf")]
    if len(points) < 2:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"><text x="10" y="20" '
            'font-size="12" fill="#888">The loss curve appears after two steps.</text></svg>'
        )
    steps, values = [p[0] for p in points], [p[1] for p in points]
    smoothed = smooth(values)
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    left, right, top, bottom = 48, 8, 8, 22

    def xy(step: int, value: float) -> str:
        x = left + (step - steps[0]) / max(1, steps[-1] - steps[0]) * (width - left - right)
        y = top + (hi - value) / span * (height - top - bottom)
        return f"{x:.1f},{y:.1f}"

    raw = " ".join(xy(s, v) for s, v in zip(steps, values))
    avg = " ".join(xy(s, v) for s, v in zip(steps, smoothed))
    label = html.escape(f"loss (smoothed {smoothed[-1]:.4f})")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="ti-trainer-loss">'
        f'<polyline points="{raw}" fill="none" stroke="#888" stroke-opacity="0.3" stroke-width="1"/>'
        f'<polyline points="{avg}" fill="none" stroke="#e8590c" stroke-width="2"/>'
        f'<text x="2" y="{top + 10}" font-size="11" fill="#888">{hi:.3f}</text>'
        f'<text x="2" y="{height - bottom}" font-size="11" fill="#888">{lo:.3f}</text>'
        f'<text x="{left}" y="{height - 6}" font-size="11" fill="#888">step {steps[0]}</text>'
        f'<text x="{width - right}" y="{height - 6}" font-size="11" text-anchor="end" fill="#888">'
        f"step {steps[-1]}</text>"
        f'<text x="{width / 2:.0f}" y="{top + 10}" font-size="11" text-anchor="middle" fill="#888">{label}</text>'
        "</svg>"
    )
