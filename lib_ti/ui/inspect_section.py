"""The tab's Inspect / convert section: what an embedding file holds, and turning any format into the WebUI's."""

from __future__ import annotations

import html
import os
from typing import Any, Callable

from lib_ti.api.routes import convert_request, inspect_request
from lib_ti.errors import UserError
from lib_ti.ui.plot import loss_svg

ELEM = "ti_trainer_inspect"


def report_html(report: dict[str, Any]) -> str:
    rows = [
        ("File", report["path"]),
        ("Format", report["format"]),
        ("Model family", report["family"]),
        ("Vectors", report["vectors"]),
    ]
    rows += [(f"metadata: {k}", v) for k, v in report["metadata"].items() if k != "ti_settings"]
    parts = [
        "<table>"
        + "".join(
            f"<tr><td>{html.escape(str(k))}</td><td><code>{html.escape(str(v))}</code></td></tr>" for k, v in rows
        )
        + "</table>"
    ]
    for key, info in report["encoders"].items():
        lines = []
        for i, norm in enumerate(info["norms"]):
            ratio = f" ({info['norm_ratio'][i]}× a token)" if "norm_ratio" in info else ""
            near = ", ".join(info["nearest"][i]) if "nearest" in info else ""
            lines.append(f"<li>vector {i}: norm {norm}{ratio}{' — near ' + html.escape(near) if near else ''}</li>")
        typical = f", ordinary tokens average {info['token_norm']}" if "token_norm" in info else ""
        parts.append(f"<p><b>{key}</b> (width {info['width']}{typical})</p><ul>{''.join(lines)}</ul>")
    parts += [f'<div class="ti-trainer-msg ti-trainer-warn">{html.escape(w)}</div>' for w in report["warnings"]]
    if report.get("history"):
        points = [(r["step"], r["mean_norm"]) for r in report["history"]]
        losses = [(r["step"], r["loss"]) for r in report["history"] if r["loss"] == r["loss"]]
        parts.append(
            "<p>Mean vector norm over the run's checkpoints:</p>"
            + loss_svg(points).replace("loss (smoothed", "norm (smoothed")
        )
        if len(losses) > 1:
            parts.append("<p>Loss at those checkpoints:</p>" + loss_svg(losses))
    return "\n".join(parts)


class InspectActions:
    def __init__(self, inspection: Any, names: Callable[[], list[str]] = list):
        self.inspection, self.names = inspection, names

    def inspect(self, name: str, path: str, second: str) -> str:
        try:
            path, second = os.path.expanduser((path or "").strip()), os.path.expanduser((second or "").strip())
            body = {"embedding": name} if name and not path else {"path": path, "second_path": second}
            return report_html(inspect_request(body, self.inspection))
        except UserError as e:
            return f'<div class="ti-trainer-msg ti-trainer-error">{html.escape(str(e))}</div>'

    def convert(self, path: str, second: str, output_name: str, overwrite: bool) -> str:
        try:
            path, second = os.path.expanduser((path or "").strip()), os.path.expanduser((second or "").strip())
            done = convert_request(
                {"path": path, "second_path": second, "output_name": output_name, "overwrite": overwrite},
                self.inspection,
            )
        except UserError as e:
            return f'<div class="ti-trainer-msg ti-trainer-error">{html.escape(str(e))}</div>'
        return (
            f'<div class="ti-trainer-msg ti-trainer-ok">Converted {html.escape(done["format"])} to '
            f"<code>{html.escape(done['path'])}</code>; type <code>{html.escape(done['name'])}</code> "
            "in a prompt.</div>"
        )


def build_inspect_section(gr, actions: InspectActions):
    """Components of the inspector; returns the embedding list, which the tab refreshes when it opens."""
    with gr.Row():
        name = gr.Dropdown(label="Loaded embedding", choices=actions.names(), elem_id=f"{ELEM}_name", scale=3)
        refresh = gr.Button("\U0001f504", elem_id=f"{ELEM}_refresh", scale=0, min_width=40)
        path = gr.Textbox(label="or a file (.safetensors, .pt, .bin, .png, .webp)", elem_id=f"{ELEM}_path", scale=3)
        second = gr.Textbox(label="second file of a diffusers SDXL pair (optional)", elem_id=f"{ELEM}_second", scale=3)
    with gr.Row():
        output_name = gr.Textbox(label="Convert to name (empty: from the file)", elem_id=f"{ELEM}_output_name")
        overwrite = gr.Checkbox(label="Overwrite", value=False, elem_id=f"{ELEM}_overwrite")
    with gr.Row():
        inspect_button = gr.Button("Inspect", elem_id=f"{ELEM}_inspect")
        convert_button = gr.Button("Convert into the embeddings folder", elem_id=f"{ELEM}_convert")
    report = gr.HTML(elem_id=f"{ELEM}_report")
    inspect_button.click(fn=actions.inspect, inputs=[name, path, second], outputs=[report])
    convert_button.click(fn=actions.convert, inputs=[path, second, output_name, overwrite], outputs=[report])
    convert_button.click(fn=lambda: gr.update(choices=actions.names()), inputs=[], outputs=[name])
    refresh.click(fn=lambda: gr.update(choices=actions.names()), inputs=[], outputs=[name])
    return name
