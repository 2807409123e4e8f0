"""The test grid's logic: strengths, prompts in both modes, layout, checkpoints, labels, and a whole run."""

from __future__ import annotations

import pytest

from helpers import grid_form
import torch
from PIL import Image

from lib_ti.errors import UserError
from lib_ti.embeddings.files import save_embedding
from lib_ti.grid.plan import Checkpoint, build_prompt, check_prompts, parse_strengths, pick_checkpoints, plan_grid
from lib_ti.grid.aliases import alias, alias_vectors, aliases_in_prompt, parse_alias
from lib_ti.grid.image import draw_grid
from lib_ti.grid.run import GridRequest, LoadedEmbedding, file_shorthash, run_grid


def test_strengths_parse_and_bad_values_are_named():
    assert parse_strengths("0.6, 0.8 1.0,1.2") == [0.6, 0.8, 1.0, 1.2]
    assert parse_strengths([1, "0.5"]) == [1.0, 0.5]
    with pytest.raises(UserError) as e:
        parse_strengths("0.8, 1.2x, -1, 50")
    assert "'1.2x' is not a number" in str(e.value) and "'-1' must be 0 or more" in str(e.value)
    assert "'50' is above" in str(e.value)
    with pytest.raises(UserError, match="at least one"):
        parse_strengths(" , ")


@pytest.mark.parametrize(
    "template,strength,mode,expected",
    [
        ("[name] portrait", 0.8, "emphasis", "(mystyle:0.8) portrait"),
        ("[name] portrait", 1.0, "emphasis", "(mystyle:1) portrait"),
        ("<lora:x:0.8> [name], (red:1.1)", 1.2, "emphasis", "<lora:x:0.8> (mystyle:1.2), (red:1.1)"),
        ("[name] portrait", 0.8, "vectors", "mystyle-x0.8 portrait"),
        ("[name] portrait", 1.0, "vectors", "mystyle portrait"),
        ("[name] portrait", None, "emphasis", "portrait"),
        ("beautiful [name] artwork", None, "vectors", "beautiful artwork"),
        ("[name], oil", None, "emphasis", "oil"),
        ("a [name], b", None, "emphasis", "a, b"),
        ("a, [name], b", None, "emphasis", "a, b"),
        ("(x, [name]) y", None, "emphasis", "(x) y"),
    ],
)
def test_prompt_building(template, strength, mode, expected):
    assert build_prompt(template, "mystyle", strength, mode) == expected


@pytest.mark.parametrize(
    "mode,strength,expected",
    [("emphasis", 1.2, "(mystyle-300:1.2) portrait"), ("vectors", 1.2, "mystyle-300-x1.2 portrait")],
)
def test_a_checkpoint_cell_names_the_checkpoint_and_its_scale_in_the_prompt(mode, strength, expected):
    assert build_prompt("[name] portrait", "mystyle", strength, mode, "300") == expected
    assert build_prompt("[name] portrait", "mystyle", strength, mode, "final") == build_prompt(
        "[name] portrait", "mystyle", strength, mode
    )


def test_alias_words_round_trip_and_only_for_known_names():
    names = ["mystyle", "my-s"]
    for step, scale in ((300, None), (None, 1.2), (40, 0.5)):
        assert parse_alias(alias("mystyle", str(step) if step else None, scale), names) == ("mystyle", step, scale)
    assert parse_alias("my-s-3-x0.5", names) == ("my-s", 3, 0.5)
    assert parse_alias("mystyle", names) is None and parse_alias("mystyle-abc", names) is None
    assert parse_alias("other-300", names) is None
    found = aliases_in_prompt("(mystyle-300:1.2), mystyle-x1.2 cat, mystyle, mystyle-300", names)
    assert found == [("mystyle-300", "mystyle", 300, None), ("mystyle-x1.2", "mystyle", None, 1.2)]


def test_prompt_without_placeholder_gets_the_embedding_in_front_and_says_so():
    prompts, notes = check_prompts(["a cat", "[name] dog", "  "])
    assert prompts == ["[name], a cat", "[name] dog"] and "a cat" in notes[0]
    with pytest.raises(UserError, match="at least one"):
        check_prompts(["", " "])


@pytest.mark.parametrize(
    "line,expected",
    [
        ("mystyle portrait", "[name] portrait"),
        ("beautiful mystyle artwork", "beautiful [name] artwork"),
        ("(mystyle:1.1), cat", "[name], cat"),
        ("( mystyle ) cat", "[name] cat"),
        ("MyStyle cat", "[name] cat"),  # the tokenizer lowercases: the WebUI uses the embedding for this too
        ("mystyles, mystyle-old, my style", "[name], mystyles, mystyle-old, my style"),
        ("([name]:1.3) cat", "[name] cat"),
    ],
)
def test_the_embeddings_own_name_marks_its_place(line, expected):
    prompts, notes = check_prompts([line], "mystyle")
    assert prompts == [expected] and bool(notes) == (expected.startswith("[name], mystyles"))


def test_a_prompt_naming_the_embedding_gets_it_once_and_a_clean_baseline():
    plan = plan_grid(
        "mystyle", [1.2], ["beautiful mystyle artwork", "(mystyle:1.1), portrait"], [], "emphasis", True,
        "strength", "prompt", "checkpoint", max_images=10,
    )  # fmt: skip
    assert [c.prompt for c in plan.cells] == [
        "beautiful artwork",
        "beautiful (mystyle:1.2) artwork",
        "portrait",
        "(mystyle:1.2), portrait",
    ]
    assert plan.notes == []


def test_layout_puts_each_axis_once_and_counts_cells():
    checkpoints = [Checkpoint("100", "/a-100.safetensors"), Checkpoint("final", None)]
    plan = plan_grid(
        "tok",
        [0.8, 1.2],
        ["[name]", "[name] portrait", "x [name]"],
        checkpoints,
        "emphasis",
        True,
        "prompt",
        "checkpoint",
        "strength",
        max_images=100,
    )
    assert plan.shape == (3, 2, 3)
    assert plan.labels == {
        "x": ["tok", "tok portrait", "x tok"],
        "y": ["step 100", "final"],
        "z": ["without", "0.8", "1.2"],
    }
    assert len(plan.cells) == 18 and len({(c.x, c.y, c.z) for c in plan.cells}) == 18
    cell = next(c for c in plan.cells if (c.x, c.y, c.z) == (1, 0, 2))
    assert cell.prompt == "(tok-100:1.2) portrait" and cell.checkpoint.label == "100"
    with pytest.raises(UserError, match="exactly one"):
        plan_grid("tok", [1.0], ["[name]"], [], "emphasis", False, "strength", "strength", "prompt", 10)


def test_a_grid_over_the_limit_says_how_many_images():
    with pytest.raises(UserError, match=r"would take 12 images \(3 strengths × 4 prompts × 1 checkpoints\)"):
        plan_grid(
            "t",
            [0.5, 1.0, 1.5],
            ["[name] a", "[name] b", "[name] c", "[name] d"],
            [],
            "emphasis",
            False,
            "strength",
            "prompt",
            "checkpoint",
            max_images=10,
        )


def test_checkpoint_choice():
    available = [(s, f"/r/t-{s}.safetensors") for s in (100, 200, 300, 400)]
    assert [c.label for c in pick_checkpoints(available, "all", final_step=400)] == ["100", "200", "300", "final"]
    assert [c.label for c in pick_checkpoints(available, "200, 100")] == ["200", "100", "final"]
    assert [c.label for c in pick_checkpoints(available, "none")] == ["final"]
    many = [(s, f"/r/t-{s}.safetensors") for s in range(10, 210, 10)]
    assert len(pick_checkpoints(many, "", final_step=None, max_default=5)) <= 6
    with pytest.raises(UserError, match="missing on disk for step"):
        pick_checkpoints(available, "150")
    with pytest.raises(UserError, match="write steps"):
        pick_checkpoints(available, "first")


def test_grid_image_size_is_cells_plus_label_margins():
    cells = [[Image.new("RGB", (64, 48), (r * 50, c * 50, 0)) for c in range(3)] for r in range(2)]
    image, geo = draw_grid(cells, ["0.6", "1.0", "1.4"], ["a prompt", "a much longer prompt that wraps"], "title")
    assert image.size == geo.size == (geo.margin_left + 3 * 64, geo.margin_top + 2 * 48)
    assert geo.margin_left > 0 and geo.margin_top > 0
    assert image.getpixel((geo.margin_left + 64 + 5, geo.margin_top + 48 + 5)) == (50, 50, 0)  # row 1, column 1
    assert image.getpixel((2, 2)) == (255, 255, 255)


class RecordingBackend:
    """Renders a cell as a colour derived from the vectors the WebUI would have used, and records each call."""

    def __init__(self, loaded: LoadedEmbedding):
        self.loaded, self.calls, self.active, self.stop_after = loaded, [], None, None

    def embedding(self, name):
        if name != self.loaded.name:
            raise UserError(f"Unknown embedding {name!r}")
        return self.loaded

    def render(self, prompt, gen, extra):
        """Resolves checkpoint/scale words as the WebUI adapter does in txt2img: the prompt alone decides."""
        total, shorthash = self.loaded.vectors["clip_l"].sum().item(), self.loaded.shorthash
        for _, name, step, scale in aliases_in_prompt(prompt, [self.loaded.name]):
            vectors, path = alias_vectors(name, step, scale, self.loaded.vectors, self.loaded.run_dir)
            total, shorthash = vectors["clip_l"].sum().item(), file_shorthash(path) if path else self.loaded.shorthash
        self.calls.append((prompt, round(total, 3), shorthash, dict(gen), dict(extra)))
        return Image.new("RGB", (gen["width"], gen["height"]), (int(total) % 256, 0, 0)), f"{prompt} {shorthash}", ""

    def save_grid(self, image, seed, title, info):
        return f"/grids/{title}-{seed}.png"

    def progress(self, done, total, text):
        pass

    def should_stop(self):
        return self.stop_after is not None and len(self.calls) >= self.stop_after

    def font_path(self):
        return None

    def clip_scorer(self):
        return None, "no CLIP model here"


@pytest.fixture
def backend(tmp_path):
    run_dir = tmp_path / "runs" / "tok"
    for step, value in ((10, 1.0), (20, 2.0)):
        save_embedding(str(run_dir / f"tok-{step}.safetensors"), {"clip_l": torch.full((2, 4), value)}, "tok", step)
    loaded = LoadedEmbedding(
        "tok", {"clip_l": torch.full((2, 4), 3.0)}, "/emb/tok.safetensors", "finalhash", 30, str(run_dir)
    )
    return RecordingBackend(loaded)


def test_each_checkpoint_cell_uses_that_checkpoints_vectors_and_hash(backend):
    result = run_grid(
        GridRequest(
            embedding="tok",
            strengths="1.0",
            prompts=["[name]"],
            checkpoints="all",
            baseline=False,
            x="checkpoint",
            y="prompt",
            z="strength",
            width=8,
            height=8,
            seed=3,
        ),
        backend,
    )
    hashes = {file_shorthash(f"{backend.loaded.run_dir}/tok-{s}.safetensors") for s in (10, 20)}
    assert [c[1] for c in backend.calls] == [8.0, 16.0, 24.0]  # sums of the 2x4 vectors 1, 2, 3
    assert {c[2] for c in backend.calls[:2]} == hashes and backend.calls[2][2] == "finalhash"
    assert all(c[3]["seed"] == 3 for c in backend.calls)
    assert len(result.images) == 1 and result.paths == ["/grids/tok-3.png"]
    assert result.geometry.columns == 3 and result.geometry.rows == 1


def test_vector_mode_scales_the_vectors_and_emphasis_mode_the_prompt(backend):
    run_grid(
        GridRequest(
            embedding="tok",
            strengths="0.5, 2",
            prompts=["[name] x"],
            mode="vectors",
            baseline=True,
            width=8,
            height=8,
            seed=1,
        ),
        backend,
    )
    assert [(c[0], c[1]) for c in backend.calls] == [("x", 24.0), ("tok-x0.5 x", 12.0), ("tok-x2 x", 48.0)]
    assert backend.calls[1][4]["TI strength"] == "tok vectors x0.5"
    backend.calls.clear()
    run_grid(
        GridRequest(embedding="tok", strengths="0.5", prompts=["[name] x"], baseline=False, width=8, height=8, seed=1),
        backend,
    )
    assert [(c[0], c[1]) for c in backend.calls] == [("(tok:0.5) x", 24.0)]


def test_interrupt_keeps_the_cells_done(backend):
    backend.stop_after = 2
    result = run_grid(
        GridRequest(
            embedding="tok", strengths="0.5, 1, 1.5", prompts=["[name]"], baseline=False, width=8, height=8, seed=1
        ),
        backend,
    )
    assert result.interrupted and len(result.cells) == 2 and "Interrupted" in result.notes[-1]
    assert len(result.images) == 1


def test_bad_requests_are_refused_with_a_message(backend):
    with pytest.raises(UserError, match="Unknown embedding"):
        run_grid(GridRequest(embedding="nope"), backend)
    with pytest.raises(UserError, match="Unknown grid settings: colour"):
        GridRequest.from_dict({"embedding": "tok", "colour": 1})
    with pytest.raises(UserError, match="steps: must be a positive"):
        GridRequest.from_dict({"embedding": "tok", "steps": 0})
    with pytest.raises(UserError, match="mode"):
        GridRequest.from_dict({"embedding": "tok", "mode": "loud"})


def test_prompt_rewrites_for_the_xyz_axes():
    from lib_ti.grid.plan import names_in_prompt, rename, reweight

    prompt = "mystyle portrait, (mystyle-old:1.1), other"
    assert names_in_prompt(prompt, ["mystyle", "mystyle-old", "missing"]) == ["mystyle", "mystyle-old"]
    assert reweight(prompt, "mystyle", 0.8) == "(mystyle:0.8) portrait, (mystyle-old:1.1), other"
    assert reweight("(mystyle:1.0) cat", "mystyle", 1.4) == "(mystyle:1.4) cat"
    assert rename(prompt, "mystyle", "mystyle-100") == "mystyle-100 portrait, (mystyle-old:1.1), other"


def test_tab_generate_reads_the_form_and_reports_errors(backend):
    from lib_ti.grid.plan import MODE_LABELS
    from lib_ti.ui.grid_section import FIELDS, GridActions

    seen = []

    def run(request, should_stop):
        seen.append(request)
        return run_grid(request, backend)

    actions = GridActions(run, lambda: ["tok"], lambda: {"steps": 3})
    values = grid_form(strengths="0.5", mode=MODE_LABELS["vectors"], prompts="[name] a\n[name] b")
    gallery, infotexts, html = actions.generate(*[values[f] for f in FIELDS])
    assert gallery == ["/grids/tok-4.png"] and len(infotexts) == 1 and "2 image(s), seed 4" in html
    assert seen[0].mode == "vectors" and seen[0].prompts == ["[name] a", "[name] b"] and seen[0].steps == 2
    gallery, _, html = actions.generate(*[{**values, "strengths": "lots"}[f] for f in FIELDS])
    assert gallery == [] and "ti-trainer-error" in html and "&#x27;lots&#x27; is not a number" in html


def test_baseline_cells_are_rendered_once_per_prompt(backend):
    result = run_grid(
        GridRequest(
            embedding="tok",
            strengths="1",
            prompts=["[name] a"],
            checkpoints="all",
            baseline=True,
            width=8,
            height=8,
            seed=1,
        ),
        backend,
    )
    assert [c[0] for c in backend.calls].count("a") == 1
    assert sum(c["strength"] == "without" for c in result.cells) == 3  # still one baseline cell per checkpoint
