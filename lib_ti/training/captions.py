"""Captions for each training sample: caption files, template lines, or both, with progressive stages.

Template lines use the WebUI's placeholders: ``[name]`` for the token and ``[filewords]`` for the image's caption.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

NAME = "[name]"
FILEWORDS = "[filewords]"

STYLE_TEMPLATES = [
    "[name]",
    "a painting in the style of [name]",
    "a [name] painting",
    "art by [name]",
    "[name] artwork",
    "a picture in [name] style",
    "an illustration in the style of [name]",
    "a rendering in the style of [name]",
    "a cropped painting in the style of [name]",
    "a beautiful image in the style of [name]",
    "[filewords], in the style of [name]",
    "[filewords], art by [name]",
]

OBJECT_TEMPLATES = [
    "[name]",
    "a photo of a [name]",
    "a rendering of a [name]",
    "a cropped photo of the [name]",
    "a photo of the [name]",
    "a close-up photo of a [name]",
    "a bright photo of the [name]",
    "a good photo of the [name]",
    "a photo of one [name]",
    "a picture of the [name]",
    "[filewords], a photo of a [name]",
    "a photo of a [name], [filewords]",
]

BUILTIN_TEMPLATES = {"style": STYLE_TEMPLATES, "object": OBJECT_TEMPLATES}


@dataclass
class CaptionPlan:
    """What the sampler needs to turn (image caption, step) into a prompt."""

    token: str
    source: str  # captions | templates | both
    templates: list[str]
    stages: list[tuple[int, list[str]]]  # (from_step, template lines), sorted

    def templates_at(self, step: int) -> list[str]:
        current = self.templates
        for from_step, lines in self.stages:
            if step >= from_step:
                current = lines
        return current

    def source_at(self, step: int) -> str:
        """A stage always speaks through its templates, whatever the base source."""
        if any(step >= from_step for from_step, _ in self.stages):
            return "templates"
        return self.source

    def caption(self, file_caption: str, step: int, rng: random.Random) -> str:
        source = self.source_at(step)
        if source == "captions" or (source == "both" and file_caption and rng.random() < 0.5):
            return caption_with_token(file_caption, self.token)
        line = rng.choice(self.templates_at(step))
        return fill_template(line, self.token, file_caption)


def caption_with_token(file_caption: str, token: str) -> str:
    """A caption that never mentions the token would not train it, so the token is put in front."""
    text = file_caption.strip()
    if not text:
        return token
    if re.search(rf"(?<![\w]){re.escape(token)}(?![\w])", text):
        return text
    return f"{token}, {text}"


def strip_token(file_caption: str, token: str) -> str:
    text = re.sub(rf"(?<![\w]){re.escape(token)}(?![\w])", "", file_caption)
    text = re.sub(r"\s*,\s*(,\s*)+", ", ", text)
    return text.strip(" ,")


def fill_template(line: str, token: str, file_caption: str) -> str:
    """Replace the placeholders; a caption that is just the token adds nothing, so [filewords] drops out."""
    words = strip_token(file_caption, token)
    text = line.replace(NAME, token)
    if FILEWORDS in text:
        text = text.replace(FILEWORDS, words)
        text = re.sub(r"^\s*,\s*|\s*,\s*$", "", text)
        text = re.sub(r"\s*,\s*,\s*", ", ", text).strip()
    return re.sub(r"\s{2,}", " ", text)


def check_templates(lines: list[str], where: str) -> list[str]:
    """Problems with template lines: each must contain [name], or the token would never be trained."""
    problems = []
    for line in lines:
        if NAME not in line:
            problems.append(f"{where}: the line {line!r} has no [name] placeholder for the token")
    return problems


def make_plan(
    token: str, source: str, template_set: str, custom: list[str], stages: list[tuple[int, list[str]]]
) -> CaptionPlan:
    templates = list(custom) if template_set == "custom" else list(BUILTIN_TEMPLATES[template_set])
    return CaptionPlan(token=token, source=source, templates=templates, stages=sorted(stages))


@dataclass
class CaptionOptions:
    """kohya's per-subset caption handling, applied to the caption file's text before templates."""

    shuffle: bool = False
    keep_tokens: int = 0
    separator: str = ","
    keep_tokens_separator: str = ""
    prefix: str = ""
    suffix: str = ""
    dropout_rate: float = 0.0
    dropout_every_n_epochs: int = 0


def kohya_caption(caption: str, options: CaptionOptions, epoch: int, rng: random.Random) -> str | None:
    """sd-scripts' process_caption: prefix/suffix, then dropout (None: this sample trains on an empty prompt),
    then shuffling of the tags after the first ``keep_tokens`` (or after ``keep_tokens_separator``)."""
    if options.prefix:
        caption = options.prefix + " " + caption
    if options.suffix:
        caption = caption + " " + options.suffix
    dropped = options.dropout_rate > 0 and rng.random() < options.dropout_rate
    if dropped or (options.dropout_every_n_epochs > 0 and epoch % options.dropout_every_n_epochs == 0):
        return None
    if not options.shuffle:
        return caption
    sep, fixed, suffix = options.separator, [], []
    if options.keep_tokens_separator and options.keep_tokens_separator in caption:
        fixed_part, flex_part = caption.split(options.keep_tokens_separator, 1)
        if options.keep_tokens_separator in flex_part:
            flex_part, suffix_part = flex_part.split(options.keep_tokens_separator, 1)
            suffix = [t.strip() for t in suffix_part.split(sep) if t.strip()]
        fixed = [t.strip() for t in fixed_part.split(sep) if t.strip()]
        flex = [t.strip() for t in flex_part.split(sep) if t.strip()]
    else:
        tokens = [t.strip() for t in caption.strip().split(sep)]
        fixed, flex = tokens[: options.keep_tokens], tokens[options.keep_tokens :]
    rng.shuffle(flex)
    return ", ".join(fixed + flex + suffix)
