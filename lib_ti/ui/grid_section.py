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


def check_sampler(name: str, names: list[str], known: Callable[[str], bool] | None = None) -> None:
    """txt2img silently uses its default for a sampler it does not know: say so instead."""
    if not name or name in names or (known is not None and known(name)):
        return
    raise UserError(f"Unknown sampler {name!r}. The WebUI offers: {', '.join(names)}.")


def cell_html(description: dict[str, str]) -> str:
    """What the selected gallery item is: a cell's checkpoint, strength, prompt and infotext, or a grid."""
    if not description:
        return (
            '<p class="ti-trainer-hint">No cell selected: select one to see its prompt, strength and checkpoint; '
            "Send to txt2img sends the selected cell.</p>"
        )
    if description.get("grid"):
        return (
            f"<p>Grid {html.escape(description['grid'])}. Select one of its cells (after the grids) to see it and "
            "send it to txt2img.</p>"
        )
    checkpoint = description["checkpoint"]
    checkpoint = f"step {checkpoint}" if checkpoint.isdigit() else checkpoint
    return (
        f"<p><b>Selected cell</b> — checkpoint: <code>{html.escape(checkpoint)}</code>, strength: "
        f"<code>{html.escape(description['strength'])}</code>, prompt: "
        f"<code>{html.escape(description['prompt'])}</code>. Send to txt2img reproduces it with:</p>"
        f'<pre class="ti-trainer-infotext">{html.escape(description["infotext"])}</pre>'
    )


class GridActions:
    """``run(request, should_stop)`` renders a grid; the Stop button ends it after the current image."""

    def __init__(
        self,
        run: Callable[[GridRequest, Callable[[], bool]], GridResult],
        names: Callable[[], list[str]],
        defaults: Callable[[], dict[str, Any]],
        samplers: Callable[[], list[str]] = list,
    ):
        self.run, self.names, self.defaults, self.samplers = run, names, defaults, samplers
        self.stop = threading.Event()

    def generate(self, *values: Any) -> tuple[list[Any], list[dict[str, str]], str]:
        """Gallery items (grids, then cells), what each item is (for its caption and Send), and the summary."""
        data = dict(zip(FIELDS, values))
        data["prompts"] = str(data.get("prompts") or "").splitlines()
        data["mode"] = next((m for m, label in MODE_LABELS.items() if label == data.get("mode")), data.get("mode"))
        for key in ("steps", "width", "height", "seed", "max_images"):
            if isinstance(data.get(key), float) and data[key].is_integer():
                data[key] = int(data[key])
        self.stop.clear()
        try:
            check_sampler(data.get("sampler_name") or "", self.samplers())
            result = self.run(GridRequest.from_dict(data, self.defaults()), self.stop.is_set)
        except UserError as e:
            return [], [], f'<div class="ti-trainer-msg ti-trainer-error">{html.escape(str(e))}</div>'
        grids = list(result.paths or result.images)
        cells = [c for c in result.cells if c["path"]]
        described = [{"grid": f"{i + 1} of {len(grids)}"} for i in range(len(grids))]
        described += [{k: str(c[k]) for k in ("checkpoint", "strength", "prompt", "infotext")} for c in cells]
        return grids + [c["path"] for c in cells], described, grid_html(result)

    @staticmethod
    def select(described: list[dict[str, str]], index: int) -> tuple[str, str, bool]:
        """The infotext Send passes to txt2img ("" for a grid), the caption, and whether Send may be pressed."""
        item = described[index] if 0 <= index < len(described) else {}
        infotext = item.get("infotext", "")
        return infotext, cell_html(item), bool(infotext)


def build_test_section(gr, actions: GridActions, wrap_gpu: Callable, add_send_buttons: Callable | None):
    """Components of the Test section; returns the embedding dropdown so training can prefill it."""
    defaults = actions.defaults()
    with gr.Row():
        embedding = gr.Dropdown(label="Embedding", choices=actions.names(), elem_id=f"{ELEM}_embedding", scale=3)
        refresh = gr.Button("\U0001f504", elem_id=f"{ELEM}_refresh", scale=0, min_width=40)
        checkpoints = gr.Textbox(
            label="Checkpoints",
            value="",
            elem_id=f"{ELEM}_checkpoints",
            scale=3,
            info="empty = every k-th (which step is best?), all, none, or steps: 100, 300",
        )
    with gr.Row():
        strengths = gr.Textbox(label="Strengths", value=DEFAULT_STRENGTHS, elem_id=f"{ELEM}_strengths")
        baseline = gr.Checkbox(label="Baseline column without the embedding", value=True, elem_id=f"{ELEM}_baseline")
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
    with gr.Accordion("Layout and generation settings (default: txt2img's)", open=False, elem_id=f"{ELEM}_settings"):
        with gr.Row():
            x = gr.Dropdown(label="X axis", choices=list(AXES), value="strength", elem_id=f"{ELEM}_x")
            y = gr.Dropdown(label="Y axis", choices=list(AXES), value="prompt", elem_id=f"{ELEM}_y")
            z = gr.Dropdown(label="Z (one grid each)", choices=list(AXES), value="checkpoint", elem_id=f"{ELEM}_z")
        negative = gr.Textbox(
            label="Negative prompt", value=defaults.get("negative_prompt", ""), elem_id=f"{ELEM}_negative"
        )
        samplers = actions.samplers()
        default_sampler = defaults.get("sampler_name", "")
        with gr.Row():
            sampler = gr.Dropdown(
                label="Sampler",
                choices=samplers,
                value=default_sampler if default_sampler in samplers or not samplers else samplers[0],
                elem_id=f"{ELEM}_sampler",
            )
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
    # object_fit="contain": a wide grid is shown whole, not cropped to a square thumbnail
    gallery = gr.Gallery(
        label="Grid and cells", elem_id=f"{ELEM}_gallery", columns=4, height="auto", object_fit="contain"
    )
    cell = gr.HTML(cell_html({}), elem_id=f"{ELEM}_cell")
    described = gr.State([])
    selected_info = gr.Textbox(visible=False, elem_id=f"{ELEM}_selected_info")
    send = add_send_buttons(gallery, selected_info) if add_send_buttons else []  # next to the caption it sends
    info = gr.HTML(elem_id=f"{ELEM}_info")
    id_task = gr.Textbox(visible=False, elem_id=f"{ELEM}_id_task")

    def select(items, evt):  # gradio finds the event argument by its annotation
        infotext, caption, can_send = actions.select(items, evt.index)
        return [infotext, caption] + [gr.update(interactive=can_send) for _ in send]

    # this module's annotations are strings, so set the event's directly
    select.__annotations__ = {"items": list, "evt": gr.SelectData, "return": list}
    gallery.select(fn=select, inputs=[described], outputs=[selected_info, cell, *send])

    inputs = [embedding, checkpoints, strengths, mode, baseline, prompts, x, y, z, negative, sampler, steps, cfg]
    inputs += [width, height, seed, max_images, scores]
    generate.click(  # the WebUI appends its timing to the last output: the HTML stays last
        fn=wrap_gpu(lambda _id, *values: actions.generate(*values), extra_outputs=[[], [], ""]),
        _js="ti_trainer_grid_start",
        inputs=[id_task, *inputs],
        outputs=[gallery, described, info],
    )
    # a new grid starts with nothing selected: Send stays off until a cell is chosen
    generate.click(
        fn=lambda: ["", cell_html({})] + [gr.update(interactive=False) for _ in send],
        inputs=[],
        outputs=[selected_info, cell, *send],
    )
    stop.click(fn=actions.stop.set, inputs=[], outputs=[])
    refresh.click(fn=lambda: gr.update(choices=actions.names()), inputs=[], outputs=[embedding])
    return embedding
