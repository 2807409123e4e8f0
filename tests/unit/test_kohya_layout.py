"""kohya's dataset layouts and step counting: <repeats>_<name> folders, dataset_config TOML, buckets, epochs."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from lib_ti.errors import UserError
from lib_ti.training.buckets import BucketSettings, bucket_resolutions, select_bucket
from lib_ti.training.config import parse_config
from lib_ti.training.kohya import resolve_length
from lib_ti.training.layout import dataset_specs, load_planned, plan_dataset


def image(path: str, size=(96, 64), caption: str | None = None, ext: str = ".caption") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(len(path))
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    if caption is not None:
        with open(os.path.splitext(path)[0] + ext, "w", encoding="utf-8") as f:
            f.write(caption)


def kohya_folder(root, count=5, repeats=10, name="mystyle", caption="mystyle, a tree", **kw) -> str:
    for i in range(count):
        image(os.path.join(root, "img", f"{repeats}_{name}", f"{i}.png"), caption=caption, **kw)
    return os.path.join(root, "img")


def plan_for(**values):
    config = parse_config({"token_string": "mystyle", **values}).config
    specs, notes = dataset_specs(config, 64)
    plan = plan_dataset(specs)
    return config, plan, notes


def test_bucket_resolutions_are_sd_scripts():
    resos = bucket_resolutions((512, 512), 256, 1024, 64)
    assert (512, 512) in resos and (256, 1024) in resos and (1024, 256) in resos
    assert (704, 320) in resos and (384, 640) in resos
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 for w, h in resos)


def test_select_bucket_nearest_aspect_and_no_upscale():
    on = BucketSettings((512, 512), True)
    assert select_bucket(1000, 500, on) == (704, 320)  # aspect 2.0: 2.2 is closer than 1.67
    assert select_bucket(500, 500, on) == (512, 512)
    assert select_bucket(1000, 500, BucketSettings((512, 512), False)) == (512, 512)
    no_up = BucketSettings((512, 512), True, bucket_no_upscale=True)
    assert select_bucket(300, 200, no_up) == (256, 192)  # small images keep their size, cut to the step


def test_repeats_folder_five_images_ten_repeats(tmp_path):
    folder = kohya_folder(str(tmp_path))
    config, plan, _ = plan_for(train_data_dir=folder, train_batch_size=2, max_train_epochs=3, resolution=64)
    assert plan.images_with_repeats == 50 and {i.repeats for i in plan.images} == {10}
    assert plan.batches_per_epoch() == 25
    length = resolve_length(config, plan)
    assert (length.max_steps, length.steps_per_epoch, length.epochs) == (75, 25, 3)
    assert "max_train_epochs 3" in length.explanation


def test_several_repeats_folders_and_what_is_skipped(tmp_path):
    root = str(tmp_path)
    kohya_folder(root, count=2, repeats=3, name="a")
    kohya_folder(root, count=1, repeats=5, name="b c")
    image(os.path.join(root, "img", "loose.png"))
    image(os.path.join(root, "img", "notes", "x.png"))
    _, plan, notes = plan_for(train_data_dir=os.path.join(root, "img"), resolution=64)
    assert plan.images_with_repeats == 2 * 3 + 5
    assert any("directly in" in n for n in notes) and any("notes" in n for n in notes)


def test_plain_folder_still_works_with_repeats_one(tmp_path):
    for i in range(3):
        image(str(tmp_path / "plain" / f"{i}.png"), caption="mystyle", ext=".txt")
    config, plan, _ = plan_for(train_data_dir=str(tmp_path / "plain"), max_train_steps=7)
    assert plan.images_with_repeats == 3 and all(i.caption == "mystyle" for i in plan.images)
    assert resolve_length(config, plan).max_steps == 7


def test_empty_caption_extension_is_kohyas_caption_and_falls_back_to_txt(tmp_path):
    image(str(tmp_path / "img" / "2_cat" / "a.png"), caption="from caption file")
    image(str(tmp_path / "img" / "2_cat" / "b.png"), caption="from txt", ext=".txt")
    image(str(tmp_path / "img" / "2_cat" / "c.png"))
    parsed = parse_config({"token_string": "cat", "train_data_dir": str(tmp_path / "img"), "caption_extension": ""})
    assert parsed.config.caption_extension == ".caption"
    assert any("'.caption'" in m for m in parsed.messages())
    plan = plan_dataset(dataset_specs(parsed.config, 64)[0])
    captions = {os.path.basename(i.path): i.caption for i in plan.images}
    assert captions == {"a.png": "from caption file", "b.png": "from txt", "c.png": "cat"}  # c: the class tokens
    assert any("'.txt'" in n for n in plan.notes)


def test_kohya_reads_only_the_first_caption_line(tmp_path):
    image(str(tmp_path / "img" / "1_x" / "a.png"), caption="first line\nsecond line")
    _, plan, _ = plan_for(train_data_dir=str(tmp_path / "img"))
    assert plan.images[0].caption == "first line"


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def test_dataset_config_toml_fallbacks_and_several_datasets(tmp_path):
    folder = kohya_folder(str(tmp_path), count=3, repeats=4, caption="x")
    sub = os.path.join(folder, "4_mystyle")
    toml = write(
        tmp_path / "dataset.toml",
        f"""[general]
caption_extension = ".caption"
shuffle_caption = true
keep_tokens = 1
enable_bucket = true
min_bucket_reso = 64
max_bucket_reso = 256

[[datasets]]
resolution = 128
batch_size = 2
  [[datasets.subsets]]
  image_dir = '{sub}'
  num_repeats = 4

[[datasets]]
resolution = [64, 64]
batch_size = 1
keep_tokens = 2
  [[datasets.subsets]]
  image_dir = '{sub}'
  num_repeats = 1
  class_tokens = 'mystyle person'
""",
    )
    config, plan, _ = plan_for(dataset_config=toml, max_train_epochs=2)
    first, second = plan.specs
    assert (first.batch_size, first.buckets.resolution, second.batch_size) == (2, (128, 128), 1)
    assert first.subsets[0].shuffle_caption and first.subsets[0].keep_tokens == 1
    assert second.subsets[0].keep_tokens == 2 and second.subsets[0].class_tokens == "mystyle person"
    assert plan.batches_per_epoch() == 6 + 3  # 12 / 2 in one bucket, then 3 × 1
    assert resolve_length(config, plan).max_steps == 18
    dataset = load_planned(plan)
    assert {tuple(i.pixels.shape[1:]) for i in dataset.items} == {(128, 128), (64, 64)}  # 3:2 is nearest 1:1 here


def test_dataset_config_problems_are_clear(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        plan_for(dataset_config=str(tmp_path / "missing.toml"))
    bad = write(tmp_path / "bad.toml", "[[datasets]]\nbatch_size = 1\n")
    with pytest.raises(UserError, match="no \\[\\[datasets\\]\\]"):
        plan_for(dataset_config=bad)


def test_gradient_accumulation_and_the_gui_epoch_formula(tmp_path):
    folder = kohya_folder(str(tmp_path), count=5, repeats=10)
    config, plan, _ = plan_for(
        train_data_dir=folder, train_batch_size=4, gradient_accumulation_steps=2, epoch=8, max_train_steps=0
    )
    length = resolve_length(config, plan)
    assert length.max_steps == 50  # ceil(50 / 4 / 2 × 8), the kohya_ss GUI's formula
    assert length.steps_per_epoch == 7  # ceil(13 batches / 2)
    assert "kohya_ss GUI" in length.explanation


def test_bad_image_is_skipped_and_listed(tmp_path):
    folder = kohya_folder(str(tmp_path), count=2, repeats=1)
    write(os.path.join(folder, "1_mystyle", "broken.png"), "not an image")
    _, plan, _ = plan_for(train_data_dir=folder)
    assert len(plan.images) == 2 and plan.skipped[0][0] == "broken.png"


def test_bucket_step_kohya_refuses_is_raised_to_the_models_multiple(tmp_path):
    folder = kohya_folder(str(tmp_path), count=1, repeats=1, size=(300, 200))
    config = parse_config(
        {"token_string": "mystyle", "train_data_dir": folder, "enable_bucket": True, "bucket_reso_steps": 1,
         "bucket_no_upscale": True, "resolution": 512}
    ).config  # fmt: skip
    plan = plan_dataset(dataset_specs(config, 512)[0], 64)
    assert plan.images[0].bucket == (256, 192) and any("refuses" in n for n in plan.notes)
    assert plan_dataset(dataset_specs(config, 1024)[0], 32).images[0].bucket == (288, 192)  # SDXL: steps of 32


def test_list_images_finds_kohya_subfolders_for_the_grid_scores(tmp_path):
    from lib_ti.training.dataset import list_images

    folder = kohya_folder(str(tmp_path), count=2, repeats=3)
    assert [os.path.basename(p) for p in list_images(folder)] == ["0.png", "1.png"]
