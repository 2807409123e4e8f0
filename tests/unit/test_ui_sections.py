"""The tab's tool sections without gradio: the grid's cell captions and sampler check, the queue table."""

from __future__ import annotations

import pytest

from helpers import grid_form

from lib_ti.errors import UserError
from lib_ti.grid.run import GridResult
from lib_ti.jobs.manager import Job, JobManager
from lib_ti.jobs.queue import BatchQueue, Entry
from lib_ti.ui.grid_section import FIELDS, GridActions, cell_html, check_sampler
from lib_ti.ui.queue_section import QueueActions, progress_text

SAMPLERS = ["Euler a", "DPM++ 2M"]


def test_an_unknown_sampler_is_named_not_replaced():
    check_sampler("Euler a", SAMPLERS)
    check_sampler("", SAMPLERS)  # empty = txt2img's default, on purpose
    check_sampler("DPM++ 2M Karras", SAMPLERS, known=lambda name: name.startswith("DPM++"))
    with pytest.raises(UserError, match="Unknown sampler 'Eulr'.*Euler a, DPM\\+\\+ 2M"):
        check_sampler("Eulr", SAMPLERS)


def cell(i: int) -> dict:
    return {
        "checkpoint": f"step {i}",
        "strength": "1.2",
        "prompt": "[name] portrait",
        "infotext": f"p{i}\nSeed: 4",
        "path": f"/c{i}.png",
    }


def test_generate_describes_every_item_and_only_cells_can_be_sent():
    seen = []

    def run(request, should_stop):
        seen.append(request)
        return GridResult([], ["/g1.png", "/g2.png"], [cell(1), cell(2)], None, 4, [])

    actions = GridActions(run, lambda: ["tok"], lambda: {}, samplers=lambda: SAMPLERS)
    values = grid_form(sampler_name="Eulr")
    gallery, described, html = actions.generate(*[values[f] for f in FIELDS])
    assert gallery == [] and "Unknown sampler" in html and not seen  # refused before anything renders
    values["sampler_name"] = "Euler a"
    gallery, described, html = actions.generate(*[values[f] for f in FIELDS])
    assert gallery == ["/g1.png", "/g2.png", "/c1.png", "/c2.png"] and len(described) == 4
    infotext, caption, can_send = actions.select(described, 3)
    assert infotext == "p2\nSeed: 4" and can_send and "step 2" in caption and "1.2" in caption and "portrait" in caption
    infotext, caption, can_send = actions.select(described, 0)  # a grid: nothing to send
    assert infotext == "" and not can_send and "Grid 1 of 2" in caption
    infotext, caption, can_send = actions.select(described, -1)  # nothing selected: Send stays off
    assert infotext == "" and not can_send and "No cell selected" in caption
    assert "No cell selected" in cell_html({})


class NoRun:
    def __call__(self, job, parsed):
        pass


def test_queue_table_shows_progress_and_invalid_entries():
    manager = JobManager()
    queue = BatchQueue(manager, NoRun())
    job = Job(id="j1", config={}, state="running", step=30, max_steps=120, eta=95)
    manager.jobs[job.id] = job
    queue.entries = [
        Entry("e1", "cats", {"token_string": "cats"}, state="running", job_id="j1"),
        Entry("e2", "empty", {}, state="invalid", error="no images (.png) in it"),
    ]
    rows = QueueActions(queue).table()
    assert rows[0][:4] == ["cats", "running", "30/120 (25%), 1:35 left", "cats"]
    assert rows[1][1] == "invalid" and "no images" in rows[1][5]
    job.state = "done"
    assert progress_text({"state": "done"}, job) == "30/120"
