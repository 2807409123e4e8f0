"""Preview images as PNGs whose infotext reproduces them in txt2img (PNG Info → Send to txt2img)."""

from __future__ import annotations

import io

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from lib_ti.embeddings.files import atomic_write_bytes
from lib_ti.grid.aliases import alias
from lib_ti.grid.plan import rename


def infotext_for_step(infotext: str, token: str, name: str, step: int) -> str:
    """The preview's infotext with the token in its prompts renamed to the checkpoint of that step
    (``<name>-<step>``), which TI Trainer resolves in txt2img; the settings line stays as the WebUI wrote it."""
    lines = infotext.split("\n")
    prompts, params = (lines[:-1], lines[-1:]) if len(lines) > 1 else (lines, [])
    return "\n".join([rename(line, token, alias(name, str(step))) for line in prompts] + params)


def save_preview(image: Image.Image, path: str, token: str, name: str, step: int) -> None:
    """Write the PNG with the infotext the host put in ``image.info["parameters"]`` (the WebUI does), atomically."""
    info = PngInfo()
    infotext = image.info.get("parameters")
    if isinstance(infotext, str):
        info.add_text("parameters", infotext_for_step(infotext, token, name, step))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    atomic_write_bytes(path, buffer.getvalue())
