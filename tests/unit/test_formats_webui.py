"""Every layout the WebUI itself loads, built here the way the tools that write it do; damaged files said plainly."""

from __future__ import annotations

import collections
import json
import os
import zlib

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from lib_ti.embeddings.formats import convert, read_embedding
from lib_ti.embeddings.pickled import PickledParameterDict
from lib_ti.errors import UserError

V = torch.linspace(-1, 1, 2 * 768).reshape(2, 768)


def webui_accepts(path):
    """The WebUI's rule for a .safetensors embedding: one tensor, or exactly clip_l and clip_g."""
    data = safetensors.torch.load_file(path)
    assert len(data) == 1 or set(data) == {"clip_l", "clip_g"}, sorted(data)
    return data


def parameter_dict(vectors):
    return torch.nn.ParameterDict({"*": torch.nn.Parameter(vectors.clone())})


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_a1111_2022_pt_with_a_parameter_dict(tmp_path, zipped):
    data = {
        "string_to_token": {"*": 265},
        "string_to_param": parameter_dict(V),
        "name": "oldstyle",
        "step": 3000,
        "sd_checkpoint": "925997e9",
        "sd_checkpoint_name": "sd-v1-4",
    }
    torch.save(data, tmp_path / "oldstyle.pt", _use_new_zipfile_serialization=zipped)
    file = read_embedding(str(tmp_path / "oldstyle.pt"))
    assert file.format == "A1111 .pt (ParameterDict, 2022)" and file.name == "oldstyle"
    assert torch.equal(file.vectors["clip_l"], V) and file.metadata["step"] == "3000"
    target = convert(file, str(tmp_path / "out" / "oldstyle.safetensors"))
    assert torch.equal(webui_accepts(target)["emb_params"], V)


def test_original_textual_inversion_embeddings_pt(tmp_path):
    token = torch.tensor(265)
    torch.save({"string_to_token": {"*": token}, "string_to_param": parameter_dict(V[:1])}, tmp_path / "embeddings.pt")
    file = read_embedding(str(tmp_path / "embeddings.pt"))
    assert file.format == "textual_inversion repository embeddings.pt" and file.name == "embeddings"
    assert torch.equal(file.vectors["clip_l"], V[:1])
    several = torch.nn.ParameterDict({"*": torch.nn.Parameter(V[:1]), "@": torch.nn.Parameter(V[1:])})
    torch.save({"string_to_token": {"*": token, "@": token}, "string_to_param": several}, tmp_path / "two.pt")
    with pytest.raises(UserError, match=r"holds 2 embeddings \(\*, @\)"):
        read_embedding(str(tmp_path / "two.pt"))


def test_a_parameter_dict_is_read_as_its_tensors_only():
    old = PickledParameterDict()  # torch 1.11 kept the vectors in _parameters only, with no _keys
    old.__setstate__({"_parameters": collections.OrderedDict([("*", V)]), "training": True, "_buffers": {}})
    assert list(old) == ["*"] and not isinstance(old, torch.nn.Module)
    new = PickledParameterDict()
    new.__setstate__({"_parameters": {"b": V, "a": V, "x": "not a tensor"}, "_keys": {"a": None, "b": None}})
    assert list(new) == ["a", "b"]


@pytest.mark.parametrize("ext", [".safetensors", ".pt"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_sdxl_as_emb_and_emb2(tmp_path, ext, dtype):
    clip_l, clip_g = torch.randn(3, 768), torch.randn(3, 1280)
    tensors = {"emb": clip_l.to(dtype), "emb2": clip_g.to(dtype)}
    path = str(tmp_path / f"xl{ext}")
    safetensors.torch.save_file(tensors, path) if ext == ".safetensors" else torch.save(tensors, path)
    file = read_embedding(path)
    assert file.format == "SDXL as two tensors (emb + emb2)" and not file.webui_loads
    assert file.vectors["clip_l"].dtype == torch.float32
    assert torch.equal(file.vectors["clip_l"], clip_l.to(dtype).float())
    assert torch.equal(file.vectors["clip_g"], clip_g.to(dtype).float())
    saved = webui_accepts(convert(file, str(tmp_path / "out" / "xl.safetensors")))
    assert set(saved) == {"clip_l", "clip_g"} and saved["clip_g"].shape == (3, 1280)


def test_two_tensors_of_other_widths_are_not_taken_for_sdxl(tmp_path):
    safetensors.torch.save_file({"emb": torch.randn(1, 768), "emb2": torch.randn(1, 1024)}, tmp_path / "x.safetensors")
    with pytest.raises(UserError, match="holds 2 tensors"):
        read_embedding(str(tmp_path / "x.safetensors"))


@pytest.mark.parametrize("ext", [".pt", ".bin", ".safetensors", ".png"])
def test_an_empty_file_is_called_empty(tmp_path, ext):
    (tmp_path / f"e{ext}").write_bytes(b"")
    with pytest.raises(UserError, match=r"is empty \(0 bytes\)"):
        read_embedding(str(tmp_path / f"e{ext}"))


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("ext", [".pt", ".safetensors"])
def test_a_truncated_file_is_damaged_not_code(tmp_path, zipped, ext):
    path = str(tmp_path / f"e{ext}")
    if ext == ".pt":
        torch.save({"string_to_param": {"*": V}}, path, _use_new_zipfile_serialization=zipped)
    else:
        safetensors.torch.save_file({"emb_params": V}, path)
    whole = open(path, "rb").read()
    open(path, "wb").write(whole[: len(whole) // 2])
    with pytest.raises(UserError, match="is damaged") as info:
        read_embedding(path)
    assert "code" not in str(info.value)


def test_random_bytes_are_damaged(tmp_path):
    (tmp_path / "e.pt").write_bytes(os.urandom(64) + b"not a pickle")
    with pytest.raises(UserError, match="is damaged"):
        read_embedding(str(tmp_path / "e.pt"))


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("with_parameter_dict", [False, True])
def test_a_pickle_that_calls_os_system_may_hold_code_and_never_runs(tmp_path, with_parameter_dict):
    marker = tmp_path / "ran"
    params = parameter_dict(V) if with_parameter_dict else {"*": V}
    torch.save({"string_to_param": params, "x": RunsACommand(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match=r"cannot be read safely \(it may hold code.*system") as info:
        read_embedding(str(tmp_path / "evil.pt"))
    assert "damaged" not in str(info.value)
    assert not marker.exists()


def test_a_pickled_torch_module_other_than_a_parameter_dict_is_refused(tmp_path):
    torch.save({"string_to_param": {"*": V}, "m": torch.nn.Linear(2, 2)}, tmp_path / "m.pt")
    with pytest.raises(UserError, match="may hold code.*Linear"):
        read_embedding(str(tmp_path / "m.pt"))


def hide_in_pixels(picture: Image.Image, data: dict) -> Image.Image:
    """An embedding hidden in an image's pixels the way the WebUI lays it out (see lib_ti.embeddings.images)."""
    payload = zlib.compress(json.dumps(data).encode(), level=9)
    nibbles = np.frombuffer(payload, np.uint8)
    rows = picture.size[1]
    cells = -(-len(nibbles) // (rows * 3)) * rows * 3
    seed, mask = 0, []
    for _ in range(cells):
        seed = (1664525 * seed + 1013904223) % 2**32
        mask.append(seed % 255 & 0x0F)
    mask = np.array(mask, np.uint8).reshape(rows, -1, 3)

    def block(values):
        return Image.fromarray((np.resize(values, cells).reshape(rows, -1, 3) ^ mask) | 0x80, "RGB")

    low, high = block(nibbles & 0x0F), block(nibbles >> 4)
    out = Image.new("RGB", (low.size[0] + picture.size[0] + high.size[0] + 2, rows))
    out.paste(low, (0, 0))
    out.paste(picture, (low.size[0] + 1, 0))
    out.paste(high, (low.size[0] + picture.size[0] + 2, 0))
    return out


@pytest.mark.parametrize("ext,options", [(".png", {}), (".webp", {"lossless": True})])
def test_embedding_hidden_in_the_pixels(tmp_path, ext, options):
    picture = Image.new("RGB", (24, 32), (200, 120, 40))
    data = {"string_to_param": {"*": {"TORCHTENSOR": V[:, :16].tolist()}}, "name": "hidden", "step": 25}
    hide_in_pixels(picture, data).save(tmp_path / f"h{ext}", **options)
    file = read_embedding(str(tmp_path / f"h{ext}"))
    assert file.name == "hidden" and file.format == f"A1111 {ext[1:].upper()}" and file.metadata["step"] == "25"
    assert torch.allclose(file.vectors["clip_l"], V[:, :16])
    picture.save(tmp_path / "plain.png")
    with pytest.raises(UserError, match="holds no embedding"):
        read_embedding(str(tmp_path / "plain.png"))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnothing")
    with pytest.raises(UserError, match="is damaged"):
        read_embedding(str(tmp_path / "broken.png"))


class SavedOnMps:
    """A vector pickled the way torch pickles tensors of devices without storages (Apple's MPS, 2022)."""

    def __init__(self, array):
        self.array = array

    def __reduce__(self):
        return (torch._utils._rebuild_device_tensor_from_numpy, (self.array, torch.float32, "mps", False))


def test_numpy_values_and_tensors_saved_on_mps_are_read(tmp_path):
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(V[:1].clone())})
    data = {"string_to_param": params, "string_to_token": {"*": SavedOnMps(np.array([265]))}, "step": np.int64(7)}
    torch.save(data, tmp_path / "mps.pt")
    file = read_embedding(str(tmp_path / "mps.pt"))
    assert torch.equal(file.vectors["clip_l"], V[:1]) and file.metadata["step"] == "7"
    data["string_to_param"] = {"*": SavedOnMps(V[:1].numpy())}
    torch.save(data, tmp_path / "mps2.pt")
    assert torch.equal(read_embedding(str(tmp_path / "mps2.pt")).vectors["clip_l"], V[:1])
