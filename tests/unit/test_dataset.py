"""The dataset folder: images of any format and shape, broken files, and caption files in any encoding."""

import os
import random

import pytest
import torch
from PIL import Image

from lib_ti.training.dataset import bucket_sizes, choose_size, load_dataset, read_caption
from lib_ti.errors import UserError

RES = 64


def save_image(folder, name, size=(80, 60), color=(200, 30, 90), mode="RGB", **kwargs):
    path = os.path.join(str(folder), name)
    Image.new(mode, size, color).save(path, **kwargs)
    return path


def corrupt(folder, name="x.png"):
    path = os.path.join(str(folder), name)
    with open(path, "wb") as f:
        f.write(random.Random(0).randbytes(2000))
    return path


def test_formats_and_shapes_all_become_square(tmp_path):
    save_image(tmp_path, "a.png", (80, 60))
    save_image(tmp_path, "b.jpg", (50, 200), (10, 240, 20))
    save_image(tmp_path, "c.webp", (300, 90), (0, 0, 255))
    save_image(tmp_path, "d.jpeg", (64, 64))
    save_image(tmp_path, "e.PNG", (17, 33), mode="L", color=128)
    save_image(tmp_path, "f.png", (40, 40), mode="P", color=3)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "readme.md").write_text("not an image")
    ds = load_dataset(str(tmp_path), RES)
    assert [os.path.basename(i.path) for i in ds.items] == ["a.png", "b.jpg", "c.webp", "d.jpeg", "e.PNG", "f.png"]
    for item in ds.items:
        assert item.pixels.shape == (3, RES, RES)
        assert item.pixels.dtype == torch.float32
        assert item.pixels.min() >= -1.0 and item.pixels.max() <= 1.0
    assert ds.skipped == [] and ds.notes == []
    assert list(ds.buckets()) == [(RES, RES)]


def test_pixel_values_map_to_minus_one_one(tmp_path):
    save_image(tmp_path, "black.png", (RES, RES), (0, 0, 0))
    save_image(tmp_path, "white.png", (RES, RES), (255, 255, 255))
    save_image(tmp_path, "red.png", (RES, RES), (255, 0, 0))
    items = {os.path.basename(i.path): i.pixels for i in load_dataset(str(tmp_path), RES).items}
    assert torch.all(items["black.png"] == -1.0)
    assert torch.all(items["white.png"] == 1.0)
    assert torch.all(items["red.png"][0] == 1.0) and torch.all(items["red.png"][1:] == -1.0)


def test_centre_crop_keeps_the_middle(tmp_path):
    image = Image.new("RGB", (300, 100), (0, 0, 0))
    image.paste((255, 255, 255), (100, 0, 200, 100))  # white middle third
    image.save(tmp_path / "wide.png")
    pixels = load_dataset(str(tmp_path), RES).items[0].pixels
    assert pixels.shape == (3, RES, RES)
    assert pixels[:, :, 2:-2].mean() > 0.9  # the crop is the white middle, not the black sides


def test_hidden_files_ignored(tmp_path):
    save_image(tmp_path, "a.png")
    corrupt(tmp_path, ".hidden.png")
    ds = load_dataset(str(tmp_path), RES)
    assert len(ds.items) == 1 and ds.skipped == []


def test_buckets_wide_and_tall(tmp_path):
    save_image(tmp_path, "wide.png", (400, 200))
    save_image(tmp_path, "tall.jpg", (200, 400))
    save_image(tmp_path, "square.webp", (300, 300))
    ds = load_dataset(str(tmp_path), 256, use_buckets=True)
    shapes = {os.path.basename(i.path): tuple(i.pixels.shape[1:]) for i in ds.items}
    h, w = shapes["wide.png"]
    assert w > h
    h, w = shapes["tall.jpg"]
    assert h > w
    assert shapes["square.webp"] == (256, 256)
    for h, w in shapes.values():
        assert h % 64 == 0 and w % 64 == 0
    buckets = ds.buckets()
    assert sorted(len(v) for v in buckets.values()) == [1, 1, 1]
    assert buckets[shapes["wide.png"]] == [2]  # sorted file order: square, tall, wide


@pytest.mark.parametrize("resolution", [256, 512, 768, 1024])
def test_bucket_sizes_multiples_of_64(resolution):
    sizes = bucket_sizes(resolution)
    assert (resolution, resolution) in sizes
    assert any(w > h for h, w in sizes) and any(h > w for h, w in sizes)
    for h, w in sizes:
        assert h % 64 == 0 and w % 64 == 0
        assert max(h / w, w / h) <= 2.0
        assert h * w <= resolution * resolution * 1.0001


def test_choose_size():
    assert choose_size(1000, 500, 512, False) == (512, 512)
    h, w = choose_size(1000, 500, 512, True)
    assert w > h and (h, w) in bucket_sizes(512)
    assert choose_size(500, 500, 512, True) == (512, 512)


def test_rgba_composited_on_white(tmp_path):
    image = Image.new("RGBA", (RES, RES), (255, 0, 0, 0))  # fully transparent red
    image.paste((0, 0, 255, 255), (0, 0, RES // 2, RES))  # opaque blue left half
    image.save(tmp_path / "alpha.png")
    pixels = load_dataset(str(tmp_path), RES).items[0].pixels
    right = pixels[:, :, RES // 2 + 2 :]
    left = pixels[:, :, : RES // 2 - 2]
    assert torch.allclose(right, torch.ones_like(right), atol=0.02)  # white, not red or black
    assert torch.allclose(left[2], torch.ones_like(left[2]), atol=0.02)
    assert torch.allclose(left[:2], -torch.ones_like(left[:2]), atol=0.02)


def test_palette_with_transparency_composited_on_white(tmp_path):
    image = Image.new("P", (RES, RES), 0)
    image.putpalette([0, 0, 0] * 256)
    image.save(tmp_path / "p.png", transparency=0)
    pixels = load_dataset(str(tmp_path), RES).items[0].pixels
    assert torch.allclose(pixels, torch.ones_like(pixels), atol=0.02)


def test_corrupt_image_skipped(tmp_path):
    save_image(tmp_path, "a.png")
    save_image(tmp_path, "b.jpg")
    corrupt(tmp_path, "x.png")
    ds = load_dataset(str(tmp_path), RES)
    assert [os.path.basename(i.path) for i in ds.items] == ["a.png", "b.jpg"]
    assert [name for name, _ in ds.skipped] == ["x.png"]
    assert "cannot be read" in ds.skipped[0][1]
    assert any("x.png" in n and "Skipped 1" in n for n in ds.notes)


def test_truncated_image_skipped(tmp_path):
    save_image(tmp_path, "a.png")
    good = save_image(tmp_path, "t.png", (RES, RES))
    data = open(good, "rb").read()
    with open(good, "wb") as f:
        f.write(data[: len(data) // 2])
    Image.effect_noise((RES, RES), 50).convert("RGB").save(tmp_path / "t.jpg", quality=95)
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 3])
    ds = load_dataset(str(tmp_path), RES)
    assert [os.path.basename(i.path) for i in ds.items] == ["a.png"]
    assert sorted(name for name, _ in ds.skipped) == ["t.jpg", "t.png"]


def test_only_corrupt_images(tmp_path):
    corrupt(tmp_path, "x.png")
    with pytest.raises(UserError) as info:
        load_dataset(str(tmp_path), RES)
    message = str(info.value)
    assert "No readable image" in message and "x.png" in message


def test_missing_folder(tmp_path):
    folder = str(tmp_path / "nope")
    with pytest.raises(UserError) as info:
        load_dataset(folder, RES)
    assert "not a folder" in str(info.value) and "nope" in str(info.value)


def test_empty_folder_name(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        load_dataset("", RES)


def test_folder_is_a_file(tmp_path):
    path = save_image(tmp_path, "a.png")
    with pytest.raises(UserError, match="not a folder"):
        load_dataset(path, RES)


def test_folder_without_images(tmp_path):
    (tmp_path / "a.txt").write_text("caption")
    (tmp_path / "b.gif").write_bytes(b"GIF89a")
    with pytest.raises(UserError) as info:
        load_dataset(str(tmp_path), RES)
    message = str(info.value)
    assert "holds no images" in message and ".png" in message and str(tmp_path) in message


# ---------------------------------------------------------------- captions


def write(folder, name, data: bytes):
    path = os.path.join(str(folder), name)
    with open(path, "wb") as f:
        f.write(data)
    return path


@pytest.mark.parametrize(
    "data",
    [
        "café au lait, ñandú".encode("utf-8"),
        b"\xef\xbb\xbf" + "café au lait, ñandú".encode("utf-8"),
        "café au lait, ñandú".encode("utf-16"),  # with BOM
        b"\xfe\xff" + "café au lait, ñandú".encode("utf-16-be"),
    ],
)
def test_read_caption_unicode_encodings(tmp_path, data):
    text, _ = read_caption(write(tmp_path, "c.txt", data))
    assert text == "café au lait, ñandú"


def test_read_caption_utf8_is_not_noted(tmp_path):
    assert read_caption(write(tmp_path, "a.txt", "café".encode("utf-8")))[1] is None
    assert read_caption(write(tmp_path, "b.txt", b"\xef\xbb\xbfcaf\xc3\xa9"))[1] is None


def test_read_caption_utf16_is_noted(tmp_path):
    assert read_caption(write(tmp_path, "a.txt", "café".encode("utf-16")))[1] == "utf-16"


def test_read_caption_cp1252_odd_length(tmp_path):
    text, encoding = read_caption(write(tmp_path, "a.txt", "a café".encode("cp1252") + b"!"))
    assert text == "a café!"
    assert encoding == "cp1252"


@pytest.mark.parametrize("text", ["café", "crème brûlée"])
def test_read_caption_cp1252_even_length(tmp_path, text):
    data = text.encode("cp1252")
    assert len(data) % 2 == 0
    assert read_caption(write(tmp_path, "a.txt", data)) == (text, "cp1252")


def test_read_caption_whitespace_collapsed(tmp_path):
    assert read_caption(write(tmp_path, "a.txt", b"  a cat,\n  on a   mat \r\n"))[0] == "a cat, on a mat"


def test_captions_matched_by_stem(tmp_path):
    save_image(tmp_path, "one.png")
    save_image(tmp_path, "two.jpg")
    save_image(tmp_path, "three.webp")
    save_image(tmp_path, "four.png")
    write(tmp_path, "one.txt", "a red cat".encode("utf-8"))
    write(tmp_path, "two.txt", b"\xef\xbb\xbf" + "a blue dog".encode("utf-8"))
    write(tmp_path, "three.txt", "a green bird".encode("utf-16"))
    write(tmp_path, "four.caption", b"wrong extension")
    write(tmp_path, "one.png.txt", b"wrong stem")
    ds = load_dataset(str(tmp_path), RES)
    captions = {os.path.basename(i.path): i.caption for i in ds.items}
    assert captions == {"one.png": "a red cat", "two.jpg": "a blue dog", "three.webp": "a green bird", "four.png": ""}
    assert ds.notes == ["three.txt was read as utf-16."]


def test_caption_extension_option(tmp_path):
    save_image(tmp_path, "one.png")
    write(tmp_path, "one.txt", b"txt caption")
    write(tmp_path, "one.caption", b"caption caption")
    ds = load_dataset(str(tmp_path), RES, caption_extension=".caption")
    assert ds.items[0].caption == "caption caption"


def test_non_utf8_caption_noted(tmp_path):
    save_image(tmp_path, "one.png")
    save_image(tmp_path, "two.png")
    write(tmp_path, "one.txt", "a café!".encode("cp1252"))
    write(tmp_path, "two.txt", "plain".encode("utf-8"))
    ds = load_dataset(str(tmp_path), RES)
    assert [i.caption for i in ds.items] == ["a café!", "plain"]
    assert ds.notes == ["one.txt was read as cp1252."]
