"""The tab's gradio layout: what every run needs on top, the rest grouped in tabs, the tools below.

Only APIs that gradio 3.41 (A1111) and gradio 4 (Forge) share are used: Tabs/Tab with ``select``, Accordion,
``gr.update(visible=..., choices=..., interactive=...)``, ``.change``/``.click``.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from lib_ti.ui.dataset_preview import build_preview
from lib_ti.ui.form import CONDITIONS, FIELDS, GROUPS, KOHYA, LOSS, values_to_dict, visibility
from lib_ti.ui.grid_section import GridActions, build_test_section
from lib_ti.ui.inspect_section import InspectActions, build_inspect_section
from lib_ti.ui.queue_section import QueueActions, build_queue_section
from lib_ti.ui.tab import ELEM, SAVE_AS, TabActions, message_html

GROUP_HINTS = {
    "Dataset": "How images become training examples: captions, templates, size.",
    "Embedding": "The file the run writes, and continuing an earlier one.",
    "Training": "How long and how fast the vectors learn.",
    "Output": "Checkpoints and where the run's files go.",
    "Previews": "Images rendered while training, shown beside the loss curve.",
    "Advanced": "Memory and speed options, early stopping.",
    KOHYA: "sd-scripts' dataset and length options: a dataset TOML, epochs, caption shuffling and dropout, buckets.",
    LOSS: "sd-scripts' noise and loss options; the defaults train as the WebUI does.",
}


def _component(gr, spec, default: Any, visible: bool = True):
    common = {"label": spec.label, "elem_id": f"{ELEM}_{spec.key}", "visible": visible}
    if spec.info:
        common["info"] = spec.info
    if spec.kind == "bool":
        return gr.Checkbox(value=default, **common)
    if spec.kind == "choice":
        return gr.Dropdown(choices=list(spec.choices), value=default, **common)
    if spec.kind == "slider":
        return gr.Slider(minimum=1, maximum=75, step=1, value=default, **common)
    if spec.kind == "int":
        return gr.Number(value=default, precision=0, **common)
    if spec.kind == "float":
        return gr.Number(value=default, **common)
    if spec.kind in ("lines", "stages"):
        return gr.Textbox(value=default, lines=3, **common)
    return gr.Textbox(value=default, lines=1, **common)


def _rows(specs: list) -> list[list]:
    """Small fields (numbers, choices, ticks) side by side, up to three a row; text fields on their own."""
    rows: list[list] = []
    for spec in specs:
        small = spec.kind in ("int", "float", "bool", "choice")
        if small and rows and len(rows[-1]) < 3 and rows[-1][0].kind in ("int", "float", "bool", "choice"):
            rows[-1].append(spec)
        else:
            rows.append([spec])
    return rows


def _form(gr, defaults: list[Any]) -> dict[str, Any]:
    """Every field's component by key: the essentials first, then one tab per group."""
    values = {spec.key: default for spec, default in zip(FIELDS, defaults)}
    shown = visibility(values)
    comps: dict[str, Any] = {}

    def add(spec):
        comps[spec.key] = _component(gr, spec, values[spec.key], shown.get(spec.key, True))

    essentials = [s for s in FIELDS if s.group == ""]
    with gr.Row():
        for spec in essentials[:3]:
            add(spec)
    for spec in essentials[3:]:
        add(spec)
    with gr.Tabs(elem_id=f"{ELEM}_groups"):
        for group in GROUPS:
            with gr.Tab(group, elem_id=f"{ELEM}_group_{group.lower()}"):
                gr.HTML(f'<p class="ti-trainer-hint">{GROUP_HINTS[group]}</p>')
                for row in _rows([spec for spec in FIELDS if spec.group == group]):
                    if len(row) == 1:
                        add(row[0])
                        continue
                    with gr.Row():
                        for spec in row:
                            add(spec)
    deps = sorted({d for keys, _ in CONDITIONS.values() for d in keys})

    def update(*dep_values):
        shown = visibility(dict(zip(deps, dep_values)))
        return [gr.update(visible=shown[key]) for key in CONDITIONS]

    for key in deps:
        comps[key].change(fn=update, inputs=[comps[d] for d in deps], outputs=[comps[k] for k in CONDITIONS])
    return comps


def _config_file(gr, actions: TabActions, inputs: list, message) -> None:
    with gr.Accordion(
        "Config file: load or save the settings (JSON, kohya_ss GUI JSON, sd-scripts TOML)",
        open=False,
        elem_id=f"{ELEM}_config",
    ):
        with gr.Row():
            config_path = gr.Textbox(
                label="Config file (JSON or TOML) on this machine", elem_id=f"{ELEM}_config_path", scale=4
            )
            config_upload = gr.File(
                label="or upload", file_types=[".json", ".toml"], elem_id=f"{ELEM}_config_upload", scale=2
            )
        save_as = gr.Radio(
            list(SAVE_AS),
            value=next(iter(SAVE_AS)),
            label="Save as",
            info="The kohya_ss GUI's JSON loads in its Textual Inversion tab (Configuration file → Load)",
            elem_id=f"{ELEM}_save_as",
        )
        with gr.Row():
            load_button = gr.Button("Load config", elem_id=f"{ELEM}_load")
            save_button = gr.Button("Save config", elem_id=f"{ELEM}_save")
        pending = gr.State("")  # the existing file Save was pressed for once: a second press overwrites it

    def load(path, upload):  # None means "leave that field as it is"
        values = actions.load(path, upload)
        return [gr.update() if v is None else v for v in values[:-1]] + values[-1:]

    load_button.click(fn=load, inputs=[config_path, config_upload], outputs=[*inputs, message])
    config_upload.upload(fn=lambda upload: load("", upload), inputs=[config_upload], outputs=[*inputs, message])
    save_button.click(fn=actions.save, inputs=[config_path, pending, save_as, *inputs], outputs=[message, pending])
    config_path.change(fn=lambda _: "", inputs=[config_path], outputs=[pending])


def _use_checkpoint(gr, actions: TabActions):
    with gr.Accordion("Use a checkpoint as the embedding", open=False, elem_id=f"{ELEM}_use_checkpoint"):
        with gr.Row():
            choice = gr.Dropdown(
                label="Checkpoint (of the last run, or a file path)",
                choices=[os.path.basename(p) for p in actions.checkpoints()],
                allow_custom_value=True,
                elem_id=f"{ELEM}_checkpoint",
                scale=3,
            )
            name = gr.Textbox(label="Name in the embeddings folder", elem_id=f"{ELEM}_checkpoint_name", scale=2)
            overwrite = gr.Checkbox(label="Overwrite", value=False, elem_id=f"{ELEM}_checkpoint_overwrite", scale=1)
        button = gr.Button("Copy into the embeddings folder", elem_id=f"{ELEM}_checkpoint_use")
        result = gr.HTML(elem_id=f"{ELEM}_checkpoint_result")

    def use(selected, new_name, replace):
        by_name = {os.path.basename(p): p for p in actions.checkpoints()}
        return actions.use_checkpoint(by_name.get(selected, selected), new_name, replace)

    button.click(fn=use, inputs=[choice, name, overwrite], outputs=[result])
    return choice


def build_tab(
    actions: TabActions,
    wrap_gpu: Callable,
    defaults: list[Any],
    grid_actions: GridActions | None = None,
    add_send_buttons: Callable | None = None,
    inspect_actions: InspectActions | None = None,
    queue_actions: QueueActions | None = None,
):
    """The gradio Blocks of the tab; ``wrap_gpu`` is the WebUI's wrap_gradio_gpu_call."""
    import gradio as gr

    with gr.Blocks(analytics_enabled=False) as tab:
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                comps = _form(gr, defaults)
                inputs = [comps[spec.key] for spec in FIELDS]
                build_preview(gr, inputs, values_to_dict, actions.native_resolution)
                message = gr.HTML(elem_id=f"{ELEM}_message")
                _config_file(gr, actions, inputs, message)
            with gr.Column(scale=2):
                with gr.Row():
                    train_button = gr.Button("Train embedding", variant="primary", elem_id=f"{ELEM}_train")
                    interrupt_button = gr.Button("Interrupt", elem_id=f"{ELEM}_interrupt")
                gr.HTML('<div id="ti_trainer_progress"></div><div id="ti_trainer_loss"></div>')
                gallery = gr.Gallery(label="Previews", elem_id=f"{ELEM}_gallery", columns=4, height="auto")
                output = gr.HTML(elem_id=f"{ELEM}_output")
                run_choice, continue_button = _interrupted_runs(gr, actions)
                checkpoint = _use_checkpoint(gr, actions)
                id_task = gr.Textbox(visible=False, elem_id=f"{ELEM}_id_task")
        lists = _tools(gr, grid_actions, wrap_gpu, add_send_buttons, inspect_actions, queue_actions)
        _train_events(
            gr, actions, wrap_gpu, train_button, interrupt_button, id_task, inputs, gallery, output, checkpoint, lists
        )
        _continue_events(gr, actions, wrap_gpu, continue_button, id_task, run_choice, gallery, output)
    return tab


def _interrupted_runs(gr, actions: TabActions):
    """Runs a crash, restart, Interrupt or Reload UI left with a checkpoint: one press continues each."""
    runs = actions.runs()
    with gr.Accordion("Interrupted runs", open=bool(runs), elem_id=f"{ELEM}_runs_section"):
        with gr.Row():
            choice = gr.Dropdown(
                label="Continue from its last checkpoint (optimizer state and step count go on)",
                choices=runs,
                value=runs[0] if runs else None,
                elem_id=f"{ELEM}_runs",
                scale=4,
            )
            refresh = gr.Button("Refresh", elem_id=f"{ELEM}_runs_refresh", scale=1)
        button = gr.Button("Continue", elem_id=f"{ELEM}_continue")

    def refreshed():
        labels = actions.runs()
        return gr.update(choices=labels, value=labels[0] if labels else None)

    refresh.click(fn=refreshed, inputs=[], outputs=[choice])
    return choice, button


def _continue_events(gr, actions, wrap_gpu, button, id_task, choice, gallery, output) -> None:
    gpu_continue = wrap_gpu(lambda _id_task, picked: actions.continue_run(picked), extra_outputs=[[], ""])

    def continue_unless_busy(id_task, picked):
        busy = actions.refused(id_task)
        return ([], message_html(busy, "warn")) if busy else gpu_continue(id_task, picked)

    button.click(
        fn=continue_unless_busy, _js="ti_trainer_start", inputs=[id_task, choice], outputs=[gallery, output]
    ).then(fn=None, _js="ti_trainer_end")


def _tools(gr, grid_actions, wrap_gpu, add_send_buttons, inspect_actions, queue_actions) -> list:
    """The test grid, inspector and queue as tabs; each refreshes its lists when it is opened."""
    lists = []  # (dropdown, names) to refresh after training
    with gr.Tabs(elem_id=f"{ELEM}_tools"):
        if grid_actions is not None:
            with gr.Tab("Test embedding: strength × prompt × checkpoint", elem_id=f"{ELEM}_tool_grid") as tab:
                embedding = build_test_section(gr, grid_actions, wrap_gpu, add_send_buttons)
            tab.select(fn=lambda: gr.update(choices=grid_actions.names()), inputs=[], outputs=[embedding])
            lists.append((embedding, grid_actions.names))
        if inspect_actions is not None:
            with gr.Tab("Inspect / convert an embedding", elem_id=f"{ELEM}_tool_inspect") as tab:
                name = build_inspect_section(gr, inspect_actions)
            tab.select(fn=lambda: gr.update(choices=inspect_actions.names()), inputs=[], outputs=[name])
            lists.append((name, inspect_actions.names))
        if queue_actions is not None:
            with gr.Tab("Batch queue: train many concepts", elem_id=f"{ELEM}_tool_queue") as tab:
                table = build_queue_section(gr, queue_actions)
            tab.select(fn=queue_actions.table, inputs=[], outputs=[table])
    return lists


def _train_events(
    gr, actions, wrap_gpu, train_button, interrupt_button, id_task, inputs, gallery, output, checkpoint, lists
) -> None:
    def train(_id_task, *values):  # the WebUI appends its timing to the last output: keep the HTML last
        gallery_items, result = actions.train(*values)
        job = actions.manager.current()
        name = os.path.splitext(os.path.basename(job.final_path))[0] if job is not None and job.final_path else None
        updates = [gr.update(choices=names(), **({"value": name} if name else {})) for _, names in lists]
        checkpoints = [os.path.basename(p) for p in actions.checkpoints()]
        return [
            gallery_items,
            gr.update(choices=checkpoints, value=checkpoints[0] if checkpoints else None),
            *updates,
            result,
        ]

    count = 3 + len(lists)
    gpu_train = wrap_gpu(train, extra_outputs=[[]] + [gr.update()] * (count - 2) + [""])

    def train_unless_busy(id_task, *values):
        """A run that would only wait behind another training is refused at once, saying which one."""
        busy = actions.refused(id_task)
        if busy:
            return [[]] + [gr.update()] * (count - 2) + [message_html(busy, "warn")]
        return gpu_train(id_task, *values)

    train_button.click(
        fn=train_unless_busy,
        _js="ti_trainer_start",
        inputs=[id_task, *inputs],
        outputs=[gallery, checkpoint, *[dropdown for dropdown, _ in lists], output],
    ).then(fn=None, _js="ti_trainer_end")  # a refused press's bar goes now, not at the progress poll after
    interrupt_button.click(fn=actions.interrupt, inputs=[], outputs=[])
