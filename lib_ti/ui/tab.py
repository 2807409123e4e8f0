"""The TI Trainer tab's actions (what its buttons do) and its result view, as plain methods testable without gradio.

The gradio layout is in ``layout.py``; the glue passes the WebUI's services in.
"""

from __future__ import annotations

import html
import os
from typing import Any, Callable

from lib_ti.embeddings.promote import use_checkpoint
from lib_ti.errors import ConfigError, UserError
from lib_ti.jobs.manager import ACTIVE, Host, Job, JobManager, check_all, no_lock, ordinary_word_note
from lib_ti.training.config import parse_config
from lib_ti.training.config_files import load_config_file, save_config_file
from lib_ti.training.kohya_gui import ModelInfo
from lib_ti.training.model import ModelAdapter
from lib_ti.training.paths import preview_caption
from lib_ti.training.run_state import continue_request, resumable_runs
from lib_ti.ui.form import FIELDS, config_to_values, values_to_dict, with_labels
from lib_ti.ui.notes import setup_notes
from lib_ti.ui.plot import loss_svg

ELEM = "ti_trainer"
RUN_SEP = " — in "
# Save config's "Save as" choices -> (format for save_config_file, file extension). Two formats share .json, so
# the choice is explicit; a .toml name still means sd-scripts' TOML, as before the choice existed.
SAVE_AS = {
    "TI Trainer JSON": ("json", ".json"),
    "kohya_ss GUI JSON (its Textual Inversion tab)": ("kohya_gui", ".json"),
    "sd-scripts TOML (--config_file)": ("toml", ".toml"),
}


def message_html(text: str, kind: str = "info") -> str:
    lines = "<br>".join(html.escape(line) for line in str(text).splitlines())
    return f'<div class="ti-trainer-msg ti-trainer-{kind}">{lines}</div>'


def error_html(error: UserError) -> str:
    """A settings error worded with the tab's labels (the API's answer keeps the config keys)."""
    if isinstance(error, ConfigError):
        return message_html("Please fix:\n" + "\n".join(f"• {with_labels(p)}" for p in error.problems), "error")
    return message_html(with_labels(str(error)), "error")


def checkpoint_files(job: Job) -> list[str]:
    return [f for f in job.files if f != job.final_path and f.endswith((".safetensors", ".pt"))]


def run_folder(job: Job) -> str:
    others = [f for f in job.files if f != job.final_path]
    return os.path.dirname(others[0]) if others else ""


def result_html(job: Job) -> str:
    kind = {"done": "ok", "interrupted": "warn"}.get(job.state, "error")
    parts = [
        f'<div class="ti-trainer-msg ti-trainer-{kind}"><b>{html.escape(job.state.capitalize())}</b> at step '
        f"{job.step}/{job.max_steps}" + (f" — {html.escape(with_labels(job.error))}" if job.error else "") + "</div>"
    ]
    if job.final_path:
        parts.append(
            f"<p>Embedding: <code>{html.escape(job.final_path)}</code> — type "
            f"<code>{html.escape(os.path.splitext(os.path.basename(job.final_path))[0])}</code> in a prompt.</p>"
        )
    folder = run_folder(job)
    if folder:
        parts.append(f"<p>Run folder (checkpoints, previews, log, config): <code>{html.escape(folder)}</code></p>")
    if job.messages:
        parts.append("<ul>" + "".join(f"<li>{html.escape(with_labels(m))}</li>" for m in job.messages) + "</ul>")
    if len(job.losses) > 1:  # this job's own curve, never another's
        parts.append(loss_svg(job.losses))
    checkpoints = checkpoint_files(job)
    if checkpoints:
        parts.append(
            f"<p>{len(checkpoints)} checkpoint(s): "
            + ", ".join(f"<code>{html.escape(os.path.basename(f))}</code>" for f in checkpoints)
            + " — <i>Use a checkpoint as the embedding</i> below makes one of them the embedding.</p>"
        )
    return "\n".join(parts)


class TabActions:
    def __init__(
        self,
        manager: JobManager,
        host: Host,
        adapter_factory: Callable[[], ModelAdapter],
        host_interrupt: Callable[[], None],
        reload_embeddings: Callable[[], None] = lambda: None,
        bitsandbytes: Callable[[], bool] = lambda: False,
        queue: Any = None,
        checkpoint_path: Callable[[str], str] = lambda name: "",
        finish_task: Callable[[str], None] = lambda id_task: None,
    ):
        self.manager, self.host, self.adapter_factory = manager, host, adapter_factory
        self.host_interrupt, self.reload_embeddings, self.bitsandbytes = host_interrupt, reload_embeddings, bitsandbytes
        self.queue, self.checkpoint_path, self.finish_task = queue, checkpoint_path, finish_task

    def refused(self, id_task: str) -> str:
        """Why this press starts nothing ("" when it may start). A refused press never reaches the WebUI's GPU
        queue, so its task is marked finished here: the progress bar the press opened ends at its next poll."""
        busy = self.busy()
        if busy:
            self.finish_task(id_task)
        return busy

    def busy(self) -> str:
        """Why Train cannot start now (another job holds the trainer), or "" when it can."""
        job = self.manager.current()
        if job is None or job.state not in ACTIVE:
            return ""
        token = job.config.get("output_name") or job.config.get("token_string")
        entries = self.queue.snapshot() if self.queue is not None else []
        index = next((i for i, e in enumerate(entries) if e["job_id"] == job.id), None)
        source = f"The batch queue (entry {index + 1} of {len(entries)})" if index is not None else "An API request"
        waiting = sum(e["state"] == "queued" for e in entries)
        return (
            f"Not started: {source} is training '{token}' ({job.state}, step {job.step}/{job.max_steps})"
            + (
                f", and {waiting} more queue entr{'y waits' if waiting == 1 else 'ies wait'} after it"
                if waiting
                else ""
            )
            + ". Press Train again when it has finished, interrupt it, or add this run to the batch queue."
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
            self.manager.ensure_idle()  # before any check touches the model or the disk
            parsed, adapter, notes = check_all(make_config(), self.adapter_factory, self.host)
            job = self.manager.create(parsed.config)
        except UserError as e:
            return [], error_html(e)
        job.messages.extend(notes)
        self.manager.run(job, parsed.config, lambda: adapter, self.host, lock=no_lock())
        return [(p, preview_caption(p)) for p in job.samples], result_html(job)

    def native_resolution(self) -> int:
        """The loaded model's training size for 'resolution 0'; 512 when no model can be asked."""
        try:
            return self.adapter_factory().native_resolution
        except Exception:  # no model loaded: the preview still counts images and steps
            return 512

    def interrupt(self) -> None:
        job = self.manager.current()
        if job is not None and job.state in ACTIVE:
            self.manager.interrupt(job, self.host_interrupt)

    def notes(self, config) -> list[str]:
        """Notes for this machine and model; nothing when no model is loaded yet."""
        try:
            adapter = self.adapter_factory()
        except UserError:
            return []
        notes = setup_notes(config, adapter.device.type, self.bitsandbytes())
        word = (
            ordinary_word_note(config.token_string, adapter.token_ids(config.token_string))
            if config.token_string
            else ""
        )
        return notes + ([word] if word else [])

    def load(self, path: str, upload: Any = None) -> list[Any]:
        """Form values from a JSON file (uploaded, or a path on this machine), plus a message."""
        source = getattr(upload, "name", None) or upload or os.path.expanduser((path or "").strip())
        try:
            if not source:
                raise UserError("Give a config file path or upload one.")
            parsed = load_config_file(str(source))
        except UserError as e:
            return [None] * len(FIELDS) + [error_html(e)]
        notes = [with_labels(m) for m in parsed.messages()] + self.notes(parsed.config)
        return config_to_values(parsed.config) + [
            message_html(f"Loaded {os.path.basename(str(source))}.\n" + ("\n".join(notes) or "All keys were read."))
        ]

    def save(self, path: str, pending: str, save_as: str, *values: Any) -> tuple[str, str]:
        """Write the form in the chosen format; an existing file is replaced only when Save is pressed twice for it.

        Returns the message and the path waiting for that confirmation ("" when none).
        """
        path = os.path.expanduser((path or "").strip())
        fmt, extension = SAVE_AS.get(save_as, SAVE_AS["TI Trainer JSON"])
        try:
            if not path:
                raise UserError("Give a path to save the config to, e.g. /data/mystyle.json")
            parsed = parse_config(values_to_dict(values))
            if os.path.isdir(path):
                path = os.path.join(path, f"{parsed.config.name}{extension}")
            if fmt == "json" and path.lower().endswith(".toml"):  # as before the choice existed
                fmt, extension = "toml", ".toml"
            if fmt != "json" and not path.lower().endswith(extension):
                raise UserError(f"{save_as} needs a file name ending in {extension}: {path}")
            if os.path.exists(path) and pending != path:
                return message_html(f"{path} exists. Press Save config again to overwrite it.", "warn"), path
            model = self.model_info(parsed.config.model_name_or_path) if fmt == "kohya_gui" else None
            notes = save_config_file(parsed.config, path, fmt, model)
        except UserError as e:
            return error_html(e), ""
        what = {"kohya_gui": " for the kohya_ss GUI", "toml": " for sd-scripts"}.get(fmt, "")
        return message_html("\n".join([f"Saved {path}{what}", *notes]), "ok"), ""

    def model_info(self, name: str) -> ModelInfo:
        """The checkpoint file and model type for the kohya_ss GUI: the named checkpoint's file when the WebUI knows
        it (or the loaded model's when none is named); the type when that is the loaded model."""
        try:
            adapter = self.adapter_factory()
        except UserError:
            adapter = None
        loaded = self.checkpoint_path(adapter.model_name) if adapter is not None else ""
        path = self.checkpoint_path(name) if name else loaded
        if adapter is None or (name and path != loaded):
            return ModelInfo(path=path)
        return ModelInfo(path, adapter.family, adapter.prediction_type, adapter.native_resolution)

    def checkpoints(self) -> list[str]:
        """The last job's checkpoints, newest first, for "Use a checkpoint as the embedding"."""
        job = self.manager.current()
        return list(reversed(checkpoint_files(job))) if job is not None else []

    def use_checkpoint(self, path: str, name: str, overwrite: bool) -> str:
        try:
            target = use_checkpoint(path, self.host.embeddings_dir(), name, overwrite, self.host.existing_names())
        except UserError as e:
            return message_html(str(e), "error")
        self.reload_embeddings()
        stem = os.path.splitext(os.path.basename(target))[0]
        return message_html(f"Copied to {target}; the WebUI reloaded its embeddings: type {stem} in a prompt.", "ok")
