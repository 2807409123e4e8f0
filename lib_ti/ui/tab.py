"""The TI Trainer tab: the form, the actions behind its buttons, and the result view.

The actions are plain methods (testable without gradio); ``build_tab`` lays out gradio components and takes
the WebUI's GPU-call wrapper from the glue.
"""

from __future__ import annotations

import html
import os
from typing import Any, Callable

from lib_ti.training.config import load_config_file, parse_config, save_config_file
from lib_ti.errors import UserError
from lib_ti.ui.form import FIELDS, GROUPS, config_to_values, values_to_dict
from lib_ti.jobs.manager import Host, Job, JobManager, no_lock, preflight
from lib_ti.training.model import ModelAdapter
from lib_ti.training.run_state import continue_request, resumable_runs
from lib_ti.ui.queue_section import QueueActions, build_queue_section
from lib_ti.ui.grid_section import GridActions, build_test_section
from lib_ti.ui.inspect_section import InspectActions, build_inspect_section

ELEM = "ti_trainer"
RUN_SEP = " — in "


def message_html(text: str, kind: str = "info") -> str:
    lines = "<br>".join(html.escape(line) for line in str(text).splitlines())
    return f'<div class="ti-trainer-msg ti-trainer-{kind}">{lines}</div>'


def result_html(job: Job) -> str:
    kind = {"done": "ok", "interrupted": "warn"}.get(job.state, "error")
    parts = [
        f'<div class="ti-trainer-msg ti-trainer-{kind}"><b>{html.escape(job.state.capitalize())}</b> at step '
        f"{job.step}/{job.max_steps}" + (f" — {html.escape(job.error)}" if job.error else "") + "</div>"
    ]
    if job.final_path:
        parts.append(
            f"<p>Embedding: <code>{html.escape(job.final_path)}</code> — type "
            f"<code>{html.escape(os.path.splitext(os.path.basename(job.final_path))[0])}</code> in a prompt.</p>"
        )
    if job.messages:
        parts.append("<ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in job.messages) + "</ul>")
    checkpoints = [f for f in job.files if f != job.final_path and f.endswith((".safetensors", ".pt"))]
    if checkpoints:
        parts.append(
            f"<details><summary>{len(checkpoints)} checkpoint file(s)</summary><ul>"
            + "".join(f"<li><code>{html.escape(f)}</code></li>" for f in checkpoints)
            + "</ul></details>"
        )
    return "\n".join(parts)


class TabActions:
    def __init__(
        self,
        manager: JobManager,
        host: Host,
        adapter_factory: Callable[[], ModelAdapter],
        host_interrupt: Callable[[], None],
    ):
        self.manager, self.host, self.adapter_factory, self.host_interrupt = (
            manager,
            host,
            adapter_factory,
            host_interrupt,
        )

    def train(self, *values: Any) -> tuple[list[str], str]:
        """Runs in the caller's thread, which already holds the WebUI's GPU queue."""
        return self._run(lambda: values_to_dict(values))

    def runs(self) -> list[str]:
        """The runs one action can continue (crash, restart, Interrupt, Reload UI), as dropdown labels."""
        return [
            f"{r['name']} — step {r['checkpoint_step']}/{r['max_steps']} ({r['state']}){RUN_SEP}{r['run_dir']}"
            for r in resumable_runs(self.host.run_root(), self.manager.run_dirs())
        ]

    def continue_run(self, choice: str) -> tuple[list[str], str]:
        """Continue the chosen run from its last checkpoint, with its optimizer state; like train otherwise."""
        if not choice:
            return [], message_html("Choose an interrupted run (press Refresh to list them).", "error")
        run_dir = choice.rsplit(RUN_SEP, 1)[-1]
        name = choice.split(" — ", 1)[0]
        return self._run(lambda: continue_request(self.host.run_root(), self.manager.run_dirs(), run_dir, name))

    def _run(self, make_config: Callable[[], dict[str, Any]]) -> tuple[list[str], str]:
        try:
            parsed = parse_config(make_config())
            self.manager.ensure_idle()
            adapter = self.adapter_factory()
            notes = preflight(parsed, adapter, self.host)
            job = self.manager.create(parsed.config)
        except UserError as e:
            return [], message_html(str(e), "error")
        job.messages.extend(notes)
        self.manager.run(job, parsed.config, lambda: adapter, self.host, lock=no_lock())
        return list(job.samples), result_html(job)

    def interrupt(self) -> None:
        job = self.manager.current()
        if job is not None and job.state in ("queued", "running"):
            self.manager.interrupt(job, self.host_interrupt)

    def load(self, path: str, upload: Any = None) -> list[Any]:
        """Form values from a JSON file (uploaded, or a path on this machine), plus a message."""
        source = getattr(upload, "name", None) or upload or path
        try:
            if not source:
                raise UserError("Give a config file path or upload one.")
            parsed = load_config_file(str(source))
        except UserError as e:
            return [None] * len(FIELDS) + [message_html(str(e), "error")]
        notes = parsed.messages() or ["All keys were read."]
        return config_to_values(parsed.config) + [
            message_html(f"Loaded {os.path.basename(str(source))}.\n" + "\n".join(notes))
        ]

    def save(self, path: str, *values: Any) -> str:
        try:
            if not path:
                raise UserError("Give a path to save the config to, e.g. /data/mystyle.json")
            parsed = parse_config(values_to_dict(values))
            if os.path.isdir(path):
                path = os.path.join(path, f"{parsed.config.name}.json")
            save_config_file(parsed.config, path)
        except UserError as e:
            return message_html(str(e), "error")
        return message_html(f"Saved {path}", "ok")


def _component(gr, spec, default: Any):
    elem_id = f"{ELEM}_{spec.key}"
    common = {"label": spec.label, "elem_id": elem_id}
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
                with gr.Row():
                    config_path = gr.Textbox(label="Config file (JSON)", elem_id=f"{ELEM}_config_path", scale=4)
                    config_upload = gr.File(
                        label="or upload", file_types=[".json"], elem_id=f"{ELEM}_config_upload", scale=2
                    )
                with gr.Row():
                    load_button = gr.Button("Load config", elem_id=f"{ELEM}_load")
                    save_button = gr.Button("Save config", elem_id=f"{ELEM}_save")
                components = []
                for group in GROUPS:
                    with gr.Accordion(group, open=group == "Embedding", elem_id=f"{ELEM}_group_{group.lower()}"):
                        for spec, default in zip(FIELDS, defaults):
                            if spec.group == group:
                                components.append((FIELDS.index(spec), _component(gr, spec, default)))
                inputs = [c for _, c in sorted(components, key=lambda item: item[0])]
            with gr.Column(scale=2):
                with gr.Row():
                    train_button = gr.Button("Train embedding", variant="primary", elem_id=f"{ELEM}_train")
                    interrupt_button = gr.Button("Interrupt", elem_id=f"{ELEM}_interrupt")
                message = gr.HTML(elem_id=f"{ELEM}_message")
                gr.HTML('<div id="ti_trainer_progress"></div><div id="ti_trainer_loss"></div>')
                runs = actions.runs()
                with gr.Accordion("Interrupted runs", open=bool(runs), elem_id=f"{ELEM}_runs_section"):
                    with gr.Row():
                        run_choice = gr.Dropdown(
                            label="Continue from its last checkpoint (optimizer state and step count go on)",
                            choices=runs,
                            value=runs[0] if runs else None,
                            elem_id=f"{ELEM}_runs",
                            scale=4,
                        )
                        refresh_runs = gr.Button("Refresh", elem_id=f"{ELEM}_runs_refresh", scale=1)
                    continue_button = gr.Button("Continue", elem_id=f"{ELEM}_continue")
                gallery = gr.Gallery(label="Previews", elem_id=f"{ELEM}_gallery", columns=4, height="auto")
                output = gr.HTML(elem_id=f"{ELEM}_output")
                id_task = gr.Textbox(visible=False, elem_id=f"{ELEM}_id_task")

        test_embedding = build_test_section(gr, grid_actions, wrap_gpu, add_send_buttons) if grid_actions else None
        if inspect_actions is not None:
            build_inspect_section(gr, inspect_actions, grid_actions.names if grid_actions else list)
        if queue_actions is not None:
            build_queue_section(gr, queue_actions)

        def train(_id_task, *values):  # the WebUI appends its timing to the last output: keep the HTML last
            gallery_items, result = actions.train(*values)
            job = actions.manager.current()
            if test_embedding is None:
                return gallery_items, result
            if job is None or not job.final_path:
                return gallery_items, gr.update(), result
            name = os.path.splitext(os.path.basename(job.final_path))[0]  # the Test section starts from it
            return gallery_items, gr.update(choices=grid_actions.names(), value=name), result

        outputs = [gallery] + ([test_embedding] if test_embedding is not None else []) + [output]
        train_button.click(
            fn=wrap_gpu(train, extra_outputs=[[]] + [None] * (len(outputs) - 2) + [""]),
            _js="ti_trainer_start",
            inputs=[id_task, *inputs],
            outputs=outputs,
        )
        interrupt_button.click(fn=actions.interrupt, inputs=[], outputs=[])
        continue_button.click(
            fn=wrap_gpu(lambda _id_task, choice: actions.continue_run(choice), extra_outputs=[[], ""]),
            _js="ti_trainer_start",
            inputs=[id_task, run_choice],
            outputs=[gallery, output],
        )

        def refresh():
            labels = actions.runs()
            return gr.update(choices=labels, value=labels[0] if labels else None)

        refresh_runs.click(fn=refresh, inputs=[], outputs=[run_choice])

        def load(path, upload):  # None means "leave that field as it is"
            values = actions.load(path, upload)
            return [gr.update() if v is None else v for v in values[:-1]] + values[-1:]

        load_button.click(fn=load, inputs=[config_path, config_upload], outputs=[*inputs, message])
        config_upload.upload(fn=lambda upload: load("", upload), inputs=[config_upload], outputs=[*inputs, message])
        save_button.click(fn=actions.save, inputs=[config_path, *inputs], outputs=[message])
    return tab
