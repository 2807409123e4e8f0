"""The tab's Batch queue section: many datasets from one base config, a table of their states."""

from __future__ import annotations

import html
import json
from typing import Any

from lib_ti.jobs.queue import BatchQueue, queue_request
from lib_ti.errors import UserError

ELEM = "ti_trainer_queue"
COLUMNS = ["entry", "state", "progress", "token", "file", "message"]


def progress_text(entry: dict[str, Any], job: Any) -> str:
    """step/max and percent for the running entry (with its ETA); the last step for finished ones. After a
    restart (no job yet) an interrupted entry shows the step continuing it starts from."""
    if job is None:
        return f"step {entry.get('step', 0)}" if entry["state"] == "interrupted" else ""
    total = job.max_steps or 1
    text = f"{job.step}/{job.max_steps}"
    if entry["state"] == "running":
        text += f" ({100 * job.step // total}%)"
        if job.eta and job.eta >= 1:  # an estimate under a second says nothing
            text += f", {int(job.eta) // 60}:{int(job.eta) % 60:02d} left"
    return text


class QueueActions:
    def __init__(self, queue: BatchQueue):
        self.queue = queue

    def table(self) -> list[list[Any]]:
        """One row per entry; the table polls this while entries are queued or running."""
        rows = []
        for e in self.queue.snapshot():
            job = self.queue.manager.get(e["job_id"]) if e["job_id"] else None
            rows.append(
                [
                    e["label"],
                    e["state"],
                    progress_text(e, job),
                    e["config"].get("token_string", ""),
                    e["final_path"],
                    e["error"]  # keys, as in the JSON the user wrote
                    or ", ".join(e["grid_paths"]),
                ]
            )
        return rows or [[""] * len(COLUMNS)]

    def notice(self) -> str:
        status = self.queue.status()
        if not status["notice"] and not status["paused"]:
            return ""
        text = status["notice"] or "Paused."
        return f'<div class="ti-trainer-msg ti-trainer-warn">{html.escape(text)}</div>'

    def resume(self) -> tuple[list[list[Any]], str]:
        count = self.queue.resume()
        text = f"Resumed: {count} entr{'y' if count == 1 else 'ies'} to train." if count else "Nothing is waiting."
        return self.table(), f'<div class="ti-trainer-msg ti-trainer-ok">{html.escape(text)}</div>'

    def pause(self) -> tuple[list[list[Any]], str]:
        self.queue.pause()
        return self.table(), self.notice()

    def refresh(self) -> tuple[list[list[Any]], str]:
        return self.table(), self.notice()

    def add(self, folder: str, base_json: str, grid: bool) -> tuple[list[list[Any]], str]:
        try:
            base = json.loads(base_json) if base_json.strip() else {}
            if not isinstance(base, dict):
                raise UserError("The base config must be a JSON object.")
            added = queue_request({"folder": folder, "base": base, "grid": grid}, self.queue)
        except json.JSONDecodeError as e:
            return (
                self.table(),
                f'<div class="ti-trainer-msg ti-trainer-error">Base config: not valid JSON ({e}).</div>',
            )
        except UserError as e:
            return self.table(), f'<div class="ti-trainer-msg ti-trainer-error">{html.escape(str(e))}</div>'
        invalid = sum(e.state == "invalid" for e in added)
        text = f"Queued {len(added) - invalid} training(s)" + (
            f"; {invalid} invalid (see the table)" if invalid else ""
        )
        if self.queue.paused:
            text += "; the queue is paused: press Resume queue to start"
        kind = "warn" if invalid else "ok"
        return self.table(), f'<div class="ti-trainer-msg ti-trainer-{kind}">{html.escape(text)}.</div>'


def build_queue_section(gr, actions: QueueActions):
    """Components of the queue; returns the table, which refreshes itself while entries are queued or running."""
    gr.HTML(
        "<p>Each subfolder of the folder is a dataset; its token is the subfolder's name unless its own "
        "<code>ti_trainer.json</code> says otherwise (that file overrides the base config). Jobs run one "
        "after another; a failed or invalid one is listed with the reason and the rest go on. The queue is kept on "
        "disk: after a restart, an Interrupt or a Reload UI it waits, paused, until you press Resume queue (an "
        "interrupted entry then goes on from its last checkpoint).</p>"
    )
    with gr.Row():
        folder = gr.Textbox(label="Folder of dataset folders", elem_id=f"{ELEM}_folder", scale=3)
        grid = gr.Checkbox(label="Test grid after each", value=False, elem_id=f"{ELEM}_grid", scale=1)
    base = gr.Textbox(
        label="Base config (JSON, same keys as a config file)",
        lines=3,
        value='{"init_word": "*", "num_vectors_per_token": 4, "max_train_steps": 1000}',
        elem_id=f"{ELEM}_base",
    )
    with gr.Row():
        add = gr.Button("Add to queue", variant="primary", elem_id=f"{ELEM}_add")
        refresh = gr.Button("Refresh", elem_id=f"{ELEM}_refresh")
        resume = gr.Button("Resume queue", elem_id=f"{ELEM}_resume")
        pause = gr.Button("Pause after this entry", elem_id=f"{ELEM}_pause")
    message = gr.HTML(value=actions.notice, elem_id=f"{ELEM}_message")
    table = gr.Dataframe(headers=COLUMNS, value=actions.table, interactive=False, elem_id=f"{ELEM}_table")
    add.click(fn=actions.add, inputs=[folder, base, grid], outputs=[table, message])
    refresh.click(fn=actions.refresh, inputs=[], outputs=[table, message])  # javascript/ti_trainer.js presses it
    resume.click(fn=actions.resume, inputs=[], outputs=[table, message])
    pause.click(fn=actions.pause, inputs=[], outputs=[table, message])
    return table
