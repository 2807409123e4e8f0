"""The tab's Test section: strengths × prompts × checkpoints of an embedding, one click, one seed."""

from __future__ import annotations

import html
import threading
from typing import Any, Callable

from lib_ti.errors import UserError
from lib_ti.grid.plan import AXES, DEFAULT_PROMPTS, DEFAULT_STRENGTHS, MODE_LABELS, MODES
from lib_ti.grid.run import GridRequest, GridResult

ELEM = "ti_trainer_grid"
FIELDS = (
    "embedding",
    "checkpoints",
    "strengths",
    "mode",
    "baseline",
    "prompts",
    "x",
    "y",
    "z",
    "negative_prompt",
    "sampler_name",
    "steps",
    "cfg_scale",
    "width",
    "height",
    "seed",
    "max_images",
    "scores",
)


def grid_html(result: GridResult) -> str:
    parts = [
        f"<p>{len(result.cells)} image(s), seed {result.seed}. Grids saved: "
        + ", ".join(f"<code>{html.escape(p)}</code>" for p in result.paths)
        + "</p>"
    ]
    scored = [c for c in result.cells if "image_similarity" in c]
    if scored:
        rows = "".join(
            f"<tr><td>{html.escape(c['checkpoint'])}</td><td>{html.escape(c['strength'])}</td>"
            f"<td>{html.escape(c['prompt'])}</td><td>{c['image_similarity']:.3f}</td>"
            f"<td>{c['text_similarity']:.3f}</td></tr>"
            for c in scored
        )
        parts.append(
            "<table><tr><th>checkpoint</th><th>strength</th><th>prompt</th><th>image sim.</th>"
            f"<th>text sim.</th></tr>{rows}</table>"
        )
    parts += [f'<div class="ti-trainer-msg ti-trainer-warn">{html.escape(n)}</div>' for n in result.notes]
    return "\n".join(parts)


class GridActions:
    """``run(request, should_stop)`` renders a grid; the Stop button ends it after the current image."""

    def __init__(
        self,
        run: Callable[[GridRequest, Callable[[], bool]], GridResult],
        names: Callable[[], list[str]],
        defaults: Callable[[], dict[str, Any]],
    ):
        self.run, self.names, self.defaults = run, names, defaults
        self.stop = threading.Event()

    def generate(self, *values: Any) -> tuple[list[Any], list[str], str]:
        """Gallery items (grids, then cells), each item's infotext (for Send to txt2img), and the summary."""
        data = dict(zip(FIELDS, values))
        data["prompts"] = str(data.get("prompts") or "").splitlines()
        data["mode"] = next((m for m, label in MODE_LABELS.items() if label == data.get("mode")), data.get("mode"))
        for key in ("steps", "width", "height", "seed", "max_images"):
            if isinstance(data.get(key), float) and data[key].is_integer():
                data[key] = int(data[key])
        self.stop.clear()
        try:
            result = self.run(GridRequest.from_dict(data, self.defaults()), self.stop.is_set)
        except UserError as e:
            return [], [], f'<div class="ti-trainer-msg ti-trainer-error">{html.escape(str(e))}</div>'
        grids = list(result.paths or result.images)
        cells = [c for c in result.cells if c["path"]]
        first = cells[0]["infotext"] if cells else ""  # a grid sends its first cell's settings, as txt2img does
        return (
            grids + [c["path"] for c in cells],
            [first] * len(grids) + [c["infotext"] for c in cells],
            grid_html(result),
        )


def build_test_section(gr, actions: GridActions, wrap_gpu: Callable, add_send_buttons: Callable | None):
    """Components of the Test section; returns the embedding dropdown so training can prefill it."""
    defaults = actions.defaults()
    with gr.Accordion("Test embedding: strength × prompt × checkpoint grid", open=True, elem_id=f"{ELEM}_section"):
        with gr.Row():
            embedding = gr.Dropdown(label="Embedding", choices=actions.names(), elem_id=f"{ELEM}_embedding", scale=3)
            refresh = gr.Button("\U0001f504", elem_id=f"{ELEM}_refresh", scale=0, min_width=40)
            checkpoints = gr.Textbox(
                label="Checkpoints",
                value="none",
                elem_id=f"{ELEM}_checkpoints",
                scale=3,
                info="none, all, empty = every k-th, or steps: 100, 300",
            )
        with gr.Row():
            strengths = gr.Textbox(label="Strengths", value=DEFAULT_STRENGTHS, elem_id=f"{ELEM}_strengths")
            baseline = gr.Checkbox(
                label="Baseline column without the embedding", value=True, elem_id=f"{ELEM}_baseline"
            )
        mode = gr.Radio(
            label="Strength mode",
            choices=[MODE_LABELS[m] for m in MODES],
            value=MODE_LABELS["emphasis"],
            elem_id=f"{ELEM}_mode",
        )
        prompts = gr.Textbox(
            label="Test prompts, one per line (the embedding's name or [name] marks where it goes)",
            lines=4,
            value="\n".join(DEFAULT_PROMPTS),
            elem_id=f"{ELEM}_prompts",
        )
        with gr.Row():
            x = gr.Dropdown(label="X axis", choices=list(AXES), value="strength", elem_id=f"{ELEM}_x")
            y = gr.Dropdown(label="Y axis", choices=list(AXES), value="prompt", elem_id=f"{ELEM}_y")
            z = gr.Dropdown(label="Z (one grid each)", choices=list(AXES), value="checkpoint", elem_id=f"{ELEM}_z")
        negative = gr.Textbox(
            label="Negative prompt", value=defaults.get("negative_prompt", ""), elem_id=f"{ELEM}_negative"
        )
        with gr.Row():
            sampler = gr.Textbox(label="Sampler", value=defaults.get("sampler_name", ""), elem_id=f"{ELEM}_sampler")
            steps = gr.Number(label="Steps", value=defaults.get("steps", 20), precision=0, elem_id=f"{ELEM}_steps")
            cfg = gr.Number(label="CFG scale", value=defaults.get("cfg_scale", 7.0), elem_id=f"{ELEM}_cfg")
        with gr.Row():
            width = gr.Number(label="Width", value=defaults.get("width", 512), precision=0, elem_id=f"{ELEM}_width")
            height = gr.Number(label="Height", value=defaults.get("height", 512), precision=0, elem_id=f"{ELEM}_height")
            seed = gr.Number(
                label="Seed (-1 = random, same for every cell)", value=-1, precision=0, elem_id=f"{ELEM}_seed"
            )
            max_images = gr.Number(label="Max images", value=100, precision=0, elem_id=f"{ELEM}_max_images")
            scores = gr.Checkbox(label="CLIP quality scores and advice", value=False, elem_id=f"{ELEM}_scores")
        with gr.Row():
            generate = gr.Button("Generate grid", variant="primary", elem_id=f"{ELEM}_generate", scale=3)
            stop = gr.Button("Stop after this image", elem_id=f"{ELEM}_stop", scale=1)
        gallery = gr.Gallery(label="Grid and cells", elem_id=f"{ELEM}_gallery", columns=4, height="auto")
        info = gr.HTML(elem_id=f"{ELEM}_info")
        infotexts = gr.State([])
        selected_info = gr.Textbox(visible=False, elem_id=f"{ELEM}_selected_info")
        if add_send_buttons:
            add_send_buttons(gallery, selected_info)
        id_task = gr.Textbox(visible=False, elem_id=f"{ELEM}_id_task")

    def select(texts, evt):  # the selected item's infotext, for Send to txt2img
        return texts[evt.index] if 0 <= evt.index < len(texts) else ""

    # gradio finds the event argument by its annotation; this module's annotations are strings, so set it directly
    select.__annotations__ = {"texts": list, "evt": gr.SelectData, "return": str}

    gallery.select(fn=select, inputs=[infotexts], outputs=[selected_info])
    inputs = [
        embedding,
        checkpoints,
        strengths,
        mode,
        baseline,
        prompts,
        x,
        y,
        z,
        negative,
        sampler,
        steps,
        cfg,
        width,
        height,
        seed,
        max_images,
        scores,
    ]
    generate.click(  # the WebUI appends its timing to the last output: the HTML stays last
        fn=wrap_gpu(lambda _id, *values: actions.generate(*values), extra_outputs=[[], [], ""]),
        _js="ti_trainer_grid_start",
        inputs=[id_task, *inputs],
        outputs=[gallery, infotexts, info],
    )
    stop.click(fn=actions.stop.set, inputs=[], outputs=[])
    refresh.click(fn=lambda: gr.update(choices=actions.names()), inputs=[], outputs=[embedding])
    return embedding
