"""Grid pictures with labelled axes: column labels on top, row labels on the left, a title for Z."""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

FONT_CANDIDATES = ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "Arial.ttf")
PAD = 8


@dataclass
class GridGeometry:
    """Where things are, so callers (and tests) can tell the cells from the labels."""

    columns: int
    rows: int
    cell_width: int
    cell_height: int
    margin_left: int
    margin_top: int

    @property
    def size(self) -> tuple[int, int]:
        return self.margin_left + self.columns * self.cell_width, self.margin_top + self.rows * self.cell_height


def load_font(size: int, path: str | None = None) -> ImageFont.ImageFont:
    for candidate in ([path] if path else []) + list(FONT_CANDIDATES):
        try:
            return ImageFont.truetype(candidate, size)
        except OSError:
            continue
    return ImageFont.load_default()


def _wrap(text: str, font, width: int) -> list[str]:
    """Greedy wrap by measured width; long prompts stay readable in narrow cells."""
    average = max(1, font.getbbox("abcdefghij")[2] // 10)
    return textwrap.wrap(text, width=max(4, width // average)) or [""]


def _text_height(lines: list[str], font) -> int:
    return len(lines) * (font.getbbox("Ag")[3] + 4)


def geometry(col_labels: list[str], row_labels: list[str], cell: tuple[int, int], title: str, font) -> GridGeometry:
    width, height = cell
    col_lines = [_wrap(label, font, width - PAD) for label in col_labels]
    title_lines = _wrap(title, font, width * max(1, len(col_labels))) if title else []
    top = max((_text_height(lines, font) for lines in col_lines), default=0) + _text_height(title_lines, font) + 2 * PAD
    row_width = min(max(width, 160), max((font.getbbox(label)[2] for label in row_labels), default=0) + 2 * PAD)
    left = row_width if any(row_labels) else 0
    return GridGeometry(len(col_labels), len(row_labels), width, height, left, top)


def draw_grid(
    cells: list[list[Image.Image | None]],
    col_labels: list[str],
    row_labels: list[str],
    title: str = "",
    font_path: str | None = None,
) -> tuple[Image.Image, GridGeometry]:
    """cells[row][column]; a missing cell (interrupted) stays blank. Returns the picture and its geometry."""
    first = next(im for row in cells for im in row if im is not None)
    font = load_font(max(14, first.width // 20), font_path)
    geo = geometry(col_labels, row_labels, first.size, title, font)
    grid = Image.new("RGB", geo.size, "white")
    draw = ImageDraw.Draw(grid)
    y = PAD
    if title:
        for line in _wrap(title, font, geo.size[0]):
            draw.text((geo.size[0] // 2, y), line, fill="black", font=font, anchor="ma")
            y += _text_height([line], font)
    for c, label in enumerate(col_labels):
        lines = _wrap(label, font, geo.cell_width - PAD)
        ly = geo.margin_top - PAD - _text_height(lines, font)
        for line in lines:
            draw.text(
                (geo.margin_left + c * geo.cell_width + geo.cell_width // 2, ly),
                line,
                fill="black",
                font=font,
                anchor="ma",
            )
            ly += _text_height([line], font)
    for r, label in enumerate(row_labels):
        lines = _wrap(label, font, geo.margin_left - 2 * PAD)
        ly = geo.margin_top + r * geo.cell_height + (geo.cell_height - _text_height(lines, font)) // 2
        for line in lines:
            draw.text((geo.margin_left - PAD, ly), line, fill="black", font=font, anchor="ra")
            ly += _text_height([line], font)
    for r, row in enumerate(cells):
        for c, image in enumerate(row):
            if image is not None:
                grid.paste(
                    image.convert("RGB").resize((geo.cell_width, geo.cell_height)),
                    (geo.margin_left + c * geo.cell_width, geo.margin_top + r * geo.cell_height),
                )
    return grid, geo


def font_from_webui_assets(root: str) -> str | None:
    path = os.path.join(root, "repositories", "stable-diffusion-webui-assets", "fonts", "roboto", "Roboto-Regular.ttf")
    return path if os.path.isfile(path) else None
