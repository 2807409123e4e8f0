"""The tab's dataset preview: which images and captions a run will use, with repeats, buckets and the steps per
epoch, before training. Rendering is plain HTML from ``lib_ti.training.preview``; gradio only shows it."""

from __future__ import annotations

import html
from typing import Any, Callable

from lib_ti.errors import UserError
from lib_ti.training.config import parse_config
from lib_ti.training.preview import preview_dataset

MAX_ROWS = 200


def preview_html(data: dict[str, Any]) -> str:
    e = html.escape
    parts = [
        f'<div class="ti-trainer-msg ti-trainer-ok"><b>{data["images_count"]} image(s), '
        f"{data['images_with_repeats']} with repeats; {data['batches_per_epoch']} batches = "
        f"{data['steps_per_epoch']} steps per epoch; {data['max_train_steps']} steps in all.</b><br>"
        f"{e(data['explanation'])}</div>"
    ]
    if data["notes"]:
        parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in data["notes"]) + "</ul>")
    for i, dataset in enumerate(data["datasets"]):
        w, h = dataset["resolution"]
        parts.append(f"<p>Dataset {i + 1}: batch size {dataset['batch_size']}, resolution {w}×{h}, buckets "
                     f"{'on' if dataset['enable_bucket'] else 'off'}</p>")  # fmt: skip
        parts.append(
            _table(
                ["folder", "images", "repeats", "class tokens", "captions"],
                [
                    [f"<code>{e(s['image_dir'])}</code>", s["images"], s["num_repeats"],
                     e(s["class_tokens"] or ""), e(s["caption_extension"])]
                    for s in dataset["subsets"]
                ],
            )
        )  # fmt: skip
        parts.append(
            _table(
                ["bucket", "images", "with repeats", "batches"],
                [
                    [f"{b['width']}×{b['height']}", b["images"], b["with_repeats"], b["batches"]]
                    for b in dataset["buckets"]
                ],
            )
        )
    images = _table(
        ["image", "repeats", "bucket", "caption", "a training prompt"],
        [
            [f"<span title='{e(im['path'])}'>{e(im['name'])}</span>", im["repeats"],
             f"{im['bucket'][0]}×{im['bucket'][1]}", e(im["caption"]),
             e(im["example_prompt"]) or "<i>(caption dropout: empty prompt)</i>"]
            for im in data["images"][:MAX_ROWS]
        ],
    )  # fmt: skip
    more = len(data["images"]) - MAX_ROWS
    parts.append(
        f"<details open><summary>Images</summary>{images}"
        + (f"<p>… and {more} more</p>" if more > 0 else "")
        + "</details>"
    )
    return '<div class="ti-trainer-preview">' + "\n".join(parts) + "</div>"


def _table(head: list[str], rows: list[list[Any]]) -> str:
    """An HTML table; the cells are HTML already (escaped by the caller where they hold user text)."""
    cells = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return "<table><tr>" + "".join(f"<th>{name}</th>" for name in head) + f"</tr>{cells}</table>"


def preview_action(values_to_config: Callable[[list[Any]], dict[str, Any]], native_resolution: Callable[[], int]):
    """The button's handler: the form's values in, the preview's HTML (or the problem) out."""

    def run(*values: Any) -> str:
        try:
            parsed = parse_config(values_to_config(list(values)))
            return preview_html(preview_dataset(parsed.config, native_resolution()))
        except UserError as err:
            lines = "<br>".join(html.escape(line) for line in str(err).splitlines())
            return f'<div class="ti-trainer-msg ti-trainer-error">{lines}</div>'

    return run


def build_preview(gr, inputs: list[Any], values_to_config, native_resolution: Callable[[], int]) -> None:
    """A button and its result, placed by the tab wherever it lays out the dataset fields."""
    with gr.Accordion("Dataset preview", open=False):
        button = gr.Button("Preview dataset", elem_id="ti_trainer_dataset_preview")
        output = gr.HTML()
    button.click(preview_action(values_to_config, native_resolution), inputs=inputs, outputs=[output])
