"""Captions: the token is always present, templates fill cleanly, stages switch the template lines."""

import random

import pytest

from lib_ti.training.captions import (
    OBJECT_TEMPLATES,
    STYLE_TEMPLATES,
    CaptionPlan,
    caption_with_token,
    check_templates,
    fill_template,
    make_plan,
    strip_token,
)


# ---------------------------------------------------------------- caption_with_token


@pytest.mark.parametrize("caption", ["", "   ", "\n"])
def test_empty_caption_is_the_token(caption):
    assert caption_with_token(caption, "mystyle") == "mystyle"


@pytest.mark.parametrize(
    "caption", ["mystyle", "a cat, mystyle", "a painting by mystyle of a cat", "mystyle, a cat", "(mystyle:1.2) cat"]
)
def test_caption_with_token_unchanged(caption):
    assert caption_with_token(caption, "mystyle") == caption


def test_caption_without_token_gets_prefix():
    assert caption_with_token("a cat on a mat", "mystyle") == "mystyle, a cat on a mat"


def test_caption_is_stripped():
    assert caption_with_token("  a cat  ", "mystyle") == "mystyle, a cat"


@pytest.mark.parametrize(
    "token, caption",
    [("art", "party"), ("art", "artwork"), ("cat", "cats on a mat"), ("my_style", "my_style2"), ("ñandú", "ñandúes")],
)
def test_token_inside_another_word_does_not_count(token, caption):
    assert caption_with_token(caption, token) == f"{token}, {caption}"


def test_token_with_regex_characters():
    assert caption_with_token("a v1.5 render", "v1.5") == "a v1.5 render"
    assert caption_with_token("a v105 render", "v1.5") == "v1.5, a v105 render"


def test_strip_token():
    assert strip_token("mystyle, a cat", "mystyle") == "a cat"
    assert strip_token("a cat, mystyle, on a mat", "mystyle") == "a cat, on a mat"
    assert strip_token("mystyle", "mystyle") == ""
    assert strip_token("a party", "art") == "a party"


# ---------------------------------------------------------------- fill_template


def test_fill_name_and_filewords():
    assert fill_template("[filewords], art by [name]", "mystyle", "a cat on a mat") == "a cat on a mat, art by mystyle"
    assert fill_template("a photo of a [name], [filewords]", "tok", "red hat") == "a photo of a tok, red hat"


def test_fill_template_without_filewords():
    assert (
        fill_template("a painting in the style of [name]", "mystyle", "a cat") == "a painting in the style of mystyle"
    )


def test_fill_template_name_twice():
    assert fill_template("[name] and [name]", "x", "") == "x and x"


@pytest.mark.parametrize(
    "line, expected",
    [
        ("[filewords], in the style of [name]", "in the style of mystyle"),
        ("a photo of a [name], [filewords]", "a photo of a mystyle"),
        ("[name] [filewords]", "mystyle"),
        ("a [filewords] painting by [name]", "a painting by mystyle"),
        ("[name], [filewords], painting", "mystyle, painting"),
    ],
)
@pytest.mark.parametrize("caption", ["mystyle", "", "  mystyle  "])
def test_filewords_disappear_cleanly(line, expected, caption):
    text = fill_template(line, "mystyle", caption)
    assert text == expected
    assert not text.startswith((",", " ")) and not text.endswith((",", " "))
    assert ", ," not in text and "  " not in text


def test_filewords_drop_the_token_from_the_caption():
    # the token comes from [name]; it must not appear twice
    assert fill_template("[filewords], art by [name]", "mystyle", "mystyle, a cat") == "a cat, art by mystyle"


# ---------------------------------------------------------------- CaptionPlan


def fill_all(lines, token, caption):
    return {fill_template(line, token, caption) for line in lines}


def test_plan_captions_only():
    plan = make_plan("tok", "captions", "style", [], [])
    rng = random.Random(0)
    assert {plan.caption("a cat", step, rng) for step in range(50)} == {"tok, a cat"}
    assert plan.caption("", 0, rng) == "tok"


def test_plan_templates_only():
    plan = make_plan("tok", "templates", "object", [], [])
    assert plan.templates == OBJECT_TEMPLATES
    rng = random.Random(1)
    captions = [plan.caption("a red hat", step, rng) for step in range(200)]
    allowed = fill_all(OBJECT_TEMPLATES, "tok", "a red hat")
    assert set(captions) <= allowed
    assert len(set(captions)) > 5  # lines are actually drawn at random
    assert all("tok" in c for c in captions)


def test_plan_both_mixes_captions_and_templates():
    plan = make_plan("tok", "both", "style", [], [])
    assert plan.templates == STYLE_TEMPLATES
    rng = random.Random(2)
    captions = [plan.caption("a cat", step, rng) for step in range(400)]
    from_file = [c for c in captions if c == "tok, a cat"]
    from_templates = [c for c in captions if c in fill_all(STYLE_TEMPLATES, "tok", "a cat")]
    assert len(from_file) + len(from_templates) == len(captions)
    assert 100 < len(from_file) < 300  # about half


def test_plan_both_without_caption_uses_templates():
    plan = make_plan("tok", "both", "custom", ["[name] art", "[name] painting"], [])
    rng = random.Random(3)
    captions = {plan.caption("", step, rng) for step in range(100)}
    assert captions == {"tok art", "tok painting"}


def test_plan_custom_templates():
    plan = make_plan("tok", "templates", "custom", ["[name] sketch"], [])
    assert plan.templates == ["[name] sketch"]
    assert plan.caption("x", 0, random.Random(0)) == "tok sketch"


@pytest.mark.parametrize("source", ["captions", "templates", "both"])
def test_plan_stages_switch_templates(source):
    stage1 = ["[name] painting", "[name] drawing"]
    stage2 = ["[name] art, [filewords]", "[name]"]
    plan = make_plan("tok", source, "style", [], [(300, stage2), (100, stage1)])
    assert [s for s, _ in plan.stages] == [100, 300]  # sorted
    rng = random.Random(1234)
    before = [plan.caption("a cat", step, rng) for step in range(0, 100)]
    during = [plan.caption("a cat", step, rng) for step in range(100, 300)]
    after = [plan.caption("a cat", step, rng) for step in range(300, 500)]
    base = fill_all(STYLE_TEMPLATES, "tok", "a cat") | {"tok, a cat"}
    assert set(before) <= base
    assert set(during) == fill_all(stage1, "tok", "a cat")
    assert set(after) == fill_all(stage2, "tok", "a cat")
    assert plan.source_at(99) == source and plan.source_at(100) == "templates"
    assert plan.templates_at(99) == STYLE_TEMPLATES
    assert plan.templates_at(100) == stage1 and plan.templates_at(299) == stage1
    assert plan.templates_at(300) == stage2 and plan.templates_at(10_000) == stage2


def test_plan_is_reproducible_with_a_seed():
    plan = make_plan("tok", "both", "object", [], [(50, ["[name] x", "[name] y"])])
    a = [plan.caption("a cat", step, random.Random(7)) for step in range(100)]
    b = [plan.caption("a cat", step, random.Random(7)) for step in range(100)]
    assert a == b


def test_caption_plan_direct():
    plan = CaptionPlan(token="t", source="templates", templates=["[name] a"], stages=[(5, ["[name] b"])])
    rng = random.Random(0)
    assert [plan.caption("", s, rng) for s in (0, 4, 5, 6)] == ["t a", "t a", "t b", "t b"]


# ---------------------------------------------------------------- check_templates


def test_check_templates_ok():
    assert check_templates(["[name]", "[filewords], by [name]"], "templates") == []
    assert check_templates([], "templates") == []
    assert check_templates(STYLE_TEMPLATES, "x") == [] and check_templates(OBJECT_TEMPLATES, "x") == []


def test_check_templates_problems():
    problems = check_templates(["[name] ok", "no placeholder", "[filewords] only", "[Name] wrong case"], "stages[1]")
    assert len(problems) == 3
    assert all(p.startswith("stages[1]:") and "[name]" in p for p in problems)
    assert "'no placeholder'" in problems[0] and "'[filewords] only'" in problems[1]
