"""Embedding files read back the way the WebUI reads them; atomic writes; optimizer state round trip."""

import os

import pytest
import safetensors
import safetensors.torch
import torch

import lib_ti.embeddings.files
from lib_ti.errors import UserError
from lib_ti.embeddings.files import (
    atomic_write_bytes,
    load_embedding,
    load_optimizer_state,
    save_embedding,
    save_optimizer_state,
    vectors_digest,
)


def sd1_vectors(n=3, d=16, seed=0):
    return {"clip_l": torch.randn(n, d, generator=torch.Generator().manual_seed(seed))}


def sdxl_vectors(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"clip_l": torch.randn(n, 64, generator=g), "clip_g": torch.randn(n, 128, generator=g)}


def webui_reads(path):
    """The tensors the WebUI's embedding loader looks at, by the same rules as its create_embedding_from_data."""
    if path.endswith(".safetensors"):
        data = safetensors.torch.load_file(path, device="cpu")
    else:
        data = torch.load(path, map_location="cpu", weights_only=True)
    if "string_to_param" in data:
        params = data["string_to_param"]
        assert len(params) == 1
        return {"clip_l": next(iter(params.values()))}
    if "clip_g" in data and "clip_l" in data:
        return {"clip_l": data["clip_l"], "clip_g": data["clip_g"]}
    assert len(data) == 1 and isinstance(next(iter(data.values())), torch.Tensor)
    return {"clip_l": next(iter(data.values()))}


# ---------------------------------------------------------------- SD1/SD2 .safetensors


def test_single_encoder_safetensors_has_one_tensor(tmp_path):
    vectors = sd1_vectors(3, 16)
    path = str(tmp_path / "mystyle.safetensors")
    save_embedding(path, vectors, "mystyle", 120, {"ti_base_model_hash": "abc123", "note": "hi"})
    data = safetensors.torch.load_file(path)
    assert len(data) == 1
    tensor = next(iter(data.values()))
    assert tensor.shape == (3, 16) and tensor.dtype == torch.float32
    assert torch.equal(tensor, vectors["clip_l"])
    assert torch.equal(webui_reads(path)["clip_l"], vectors["clip_l"])


def test_safetensors_metadata(tmp_path):
    path = str(tmp_path / "mystyle.safetensors")
    save_embedding(path, sd1_vectors(), "mystyle", 120, {"ti_base_model_hash": "abc123", "ti_vectors": 3})
    with safetensors.safe_open(path, framework="pt") as f:
        meta = f.metadata()
    assert meta["name"] == "mystyle"
    assert meta["step"] == "120"
    assert meta["ti_base_model_hash"] == "abc123"
    assert meta["ti_vectors"] == "3"  # every value is stored as a string, as safetensors requires


def test_vectors_saved_as_float32_cpu_contiguous(tmp_path):
    base = torch.randn(16, 4)
    vectors = {"clip_l": base.t().to(torch.float16).requires_grad_()}  # non-contiguous half with grad
    path = str(tmp_path / "h.safetensors")
    save_embedding(path, vectors, "h", 1)
    data = safetensors.torch.load_file(path)
    (tensor,) = data.values()
    assert tensor.dtype == torch.float32 and tensor.shape == (4, 16)
    assert torch.equal(tensor, vectors["clip_l"].detach().float())


# ---------------------------------------------------------------- SD1/SD2 .pt


def test_single_encoder_pt_format(tmp_path):
    vectors = sd1_vectors(2, 8)
    path = str(tmp_path / "mystyle.pt")
    save_embedding(path, vectors, "mystyle", 300, {"ti_base_model_hash": "abc", "ti_base_model_name": "sd15"})
    data = torch.load(path, weights_only=True)  # the WebUI's safe loader accepts it
    assert isinstance(data, dict)
    assert len(data["string_to_param"]) == 1
    (tensor,) = data["string_to_param"].values()
    assert tensor.shape == (2, 8)
    assert torch.equal(tensor, vectors["clip_l"])
    assert data["name"] == "mystyle"
    assert data["step"] == 300
    assert data["sd_checkpoint"] == "abc" and data["sd_checkpoint_name"] == "sd15"
    assert len(data["string_to_token"]) == 1
    assert torch.equal(webui_reads(path)["clip_l"], vectors["clip_l"])


def test_pt_without_metadata(tmp_path):
    path = str(tmp_path / "m.pt")
    save_embedding(path, sd1_vectors(), "m", 0)
    data = torch.load(path, weights_only=True)
    assert data["step"] == 0 and data["sd_checkpoint"] is None


# ---------------------------------------------------------------- SDXL


def test_sdxl_safetensors_keys(tmp_path):
    vectors = sdxl_vectors(2)
    path = str(tmp_path / "xl.safetensors")
    save_embedding(path, vectors, "xl", 50)
    data = safetensors.torch.load_file(path)
    assert set(data) == {"clip_l", "clip_g"}
    assert data["clip_l"].shape == (2, 64) and data["clip_g"].shape == (2, 128)
    assert torch.equal(data["clip_l"], vectors["clip_l"]) and torch.equal(data["clip_g"], vectors["clip_g"])
    with safetensors.safe_open(path, framework="pt") as f:
        assert f.metadata()["name"] == "xl"


def test_sdxl_pt_keys(tmp_path):
    vectors = sdxl_vectors(3)
    path = str(tmp_path / "xl.pt")
    save_embedding(path, vectors, "xl", 50)
    data = torch.load(path, weights_only=True)
    assert set(data) == {"clip_l", "clip_g"}
    assert torch.equal(data["clip_g"], vectors["clip_g"])


def test_unknown_extension_refused(tmp_path):
    path = str(tmp_path / "x.ckpt")
    with pytest.raises(UserError, match="safetensors"):
        save_embedding(path, sd1_vectors(), "x", 1)
    assert not os.path.exists(path)


# ---------------------------------------------------------------- load_embedding


@pytest.mark.parametrize("ext", [".safetensors", ".pt"])
@pytest.mark.parametrize("make", [sd1_vectors, sdxl_vectors])
def test_load_embedding_round_trip(tmp_path, ext, make):
    vectors = make()
    path = str(tmp_path / f"e{ext}")
    save_embedding(path, vectors, "e", 42, {"extra": "yes"})
    loaded, meta = load_embedding(path)
    assert set(loaded) == set(vectors)
    for key in vectors:
        assert torch.equal(loaded[key], vectors[key])
    if ext == ".safetensors":
        assert meta["step"] == "42" and meta["extra"] == "yes"
    elif "clip_g" in vectors:
        assert meta == {}  # the WebUI reads an SDXL .pt only when it holds just the two tensors
    else:
        assert meta["step"] == "42" and meta["name"] == "e"  # an A1111 .pt carries its step and name


def test_load_embedding_diffusers_style_one_vector(tmp_path):
    path = str(tmp_path / "learned_embeds.safetensors")
    safetensors.torch.save_file({"<cat-toy>": torch.ones(768)}, path)
    loaded, _ = load_embedding(path)
    assert loaded["clip_l"].shape == (1, 768)


def test_load_embedding_pt_single_tensor_dict(tmp_path):
    path = str(tmp_path / "learned_embeds.bin")
    torch.save({"<cat-toy>": torch.ones(2, 8)}, path)
    loaded, _ = load_embedding(path)
    assert loaded["clip_l"].shape == (2, 8)


def test_load_embedding_refuses_multi_key_safetensors(tmp_path):
    path = str(tmp_path / "multi.safetensors")
    safetensors.torch.save_file({"a": torch.zeros(1, 8), "b": torch.zeros(1, 8)}, path)
    with pytest.raises(UserError) as info:
        load_embedding(path)
    assert "multi.safetensors" in str(info.value)


def test_load_embedding_refuses_multi_string_to_param(tmp_path):
    path = str(tmp_path / "multi.pt")
    torch.save({"string_to_param": {"*": torch.zeros(1, 8), "#": torch.zeros(1, 8)}}, path)
    with pytest.raises(UserError) as info:
        load_embedding(path)
    assert "multi.pt" in str(info.value) and "2" in str(info.value)


def test_load_embedding_missing(tmp_path):
    path = str(tmp_path / "gone.safetensors")
    with pytest.raises(UserError) as info:
        load_embedding(path)
    assert "gone.safetensors" in str(info.value) and "does not exist" in str(info.value)


def test_load_embedding_garbage_files(tmp_path):
    for name in ("junk.safetensors", "junk.pt"):
        path = tmp_path / name
        path.write_bytes(b"\x00not a tensor file" * 10)
        with pytest.raises(UserError, match="junk"):
            load_embedding(str(path))


def test_load_embedding_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    path = str(tmp_path / "evil.pt")
    torch.save({"string_to_param": {"*": torch.zeros(1, 8)}, "x": Evil()}, path)
    with pytest.raises(UserError, match="safely"):
        load_embedding(path)


def test_load_embedding_unknown_extension(tmp_path):
    path = tmp_path / "e.ckpt"
    path.write_bytes(b"x")
    with pytest.raises(UserError, match="e.ckpt"):
        load_embedding(str(path))


# ---------------------------------------------------------------- atomic_write_bytes


def test_atomic_write_creates_folders_and_writes(tmp_path):
    path = tmp_path / "a" / "b" / "file.bin"
    atomic_write_bytes(str(path), b"hello")
    assert path.read_bytes() == b"hello"
    assert os.listdir(path.parent) == ["file.bin"]
    atomic_write_bytes(str(path), b"world")
    assert path.read_bytes() == b"world"
    assert os.listdir(path.parent) == ["file.bin"]


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "emb.safetensors"
    old = b"old contents \x00\x01\x02" * 100
    path.write_bytes(old)

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lib_ti.embeddings.files.os, "replace", full_disk)
    with pytest.raises(UserError) as info:
        atomic_write_bytes(str(path), b"new contents")
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["emb.safetensors"]  # no temp file left behind
    message = str(info.value)
    assert str(path) in message
    assert "No space left on device" in message


def test_atomic_write_failure_in_save_embedding(tmp_path, monkeypatch):
    path = str(tmp_path / "emb.safetensors")
    save_embedding(path, sd1_vectors(seed=1), "emb", 1)
    before = open(path, "rb").read()

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lib_ti.embeddings.files.os, "replace", full_disk)
    with pytest.raises(UserError):
        save_embedding(path, sd1_vectors(seed=2), "emb", 2)
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["emb.safetensors"]


def test_atomic_write_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(UserError) as info:
        atomic_write_bytes(str(blocker / "sub" / "x.bin"), b"data")
    assert str(blocker) in str(info.value)


# ---------------------------------------------------------------- optimizer state


def trained_adamw(steps=2, seed=0):
    param = torch.nn.Parameter(torch.randn(3, 16, generator=torch.Generator().manual_seed(seed)))
    opt = torch.optim.AdamW([param], lr=0.01, betas=(0.85, 0.99), weight_decay=0.01)
    for _ in range(steps):
        loss = (param**2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return param, opt


def test_optimizer_state_round_trip(tmp_path):
    param, opt = trained_adamw()
    vectors = {"clip_l": param.detach()}
    path = str(tmp_path / "e-2.optimizer.safetensors")
    save_optimizer_state(path, opt.state_dict(), vectors)
    state = load_optimizer_state(path, vectors)
    assert state is not None

    fresh_param = torch.nn.Parameter(param.detach().clone())
    fresh = torch.optim.AdamW([fresh_param], lr=0.5)
    fresh.load_state_dict(state)
    original = opt.state_dict()
    loaded = fresh.state_dict()
    assert torch.equal(loaded["state"][0]["exp_avg"], original["state"][0]["exp_avg"])
    assert torch.equal(loaded["state"][0]["exp_avg_sq"], original["state"][0]["exp_avg_sq"])
    assert float(loaded["state"][0]["step"]) == float(original["state"][0]["step"]) == 2.0
    assert loaded["param_groups"][0]["lr"] == 0.01
    assert tuple(loaded["param_groups"][0]["betas"]) == (0.85, 0.99)

    # the next step from the loaded state is the step the original optimizer takes
    for p, o in ((param, opt), (fresh_param, fresh)):
        o.zero_grad()
        (p**2).sum().backward()
        o.step()
    assert torch.allclose(param, fresh_param, rtol=0, atol=1e-7)


def test_optimizer_state_is_not_pickle(tmp_path):
    param, opt = trained_adamw()
    path = str(tmp_path / "o.safetensors")
    save_optimizer_state(path, opt.state_dict(), {"clip_l": param.detach()})
    tensors = safetensors.torch.load_file(path)
    assert set(tensors) >= {"state.0.exp_avg", "state.0.exp_avg_sq"}


def test_optimizer_state_digest_mismatch(tmp_path):
    param, opt = trained_adamw()
    path = str(tmp_path / "o.safetensors")
    save_optimizer_state(path, opt.state_dict(), {"clip_l": param.detach()})
    other = {"clip_l": param.detach() + 1e-3}
    assert vectors_digest(other) != vectors_digest({"clip_l": param.detach()})
    assert load_optimizer_state(path, other) is None
    assert load_optimizer_state(path, {"clip_g": param.detach()}) is None


def test_optimizer_state_missing_or_broken(tmp_path):
    vectors = sd1_vectors()
    assert load_optimizer_state(str(tmp_path / "missing.optimizer.safetensors"), vectors) is None
    broken = tmp_path / "broken.optimizer.safetensors"
    broken.write_bytes(b"garbage")
    assert load_optimizer_state(str(broken), vectors) is None


def test_vectors_digest_stable_and_sensitive():
    a = sd1_vectors(seed=3)
    assert vectors_digest(a) == vectors_digest({"clip_l": a["clip_l"].clone()})
    assert vectors_digest(a) == vectors_digest({"clip_l": a["clip_l"].double()})  # compared as float32
    assert vectors_digest(a) != vectors_digest(sd1_vectors(seed=4))
    assert vectors_digest(sdxl_vectors()) == vectors_digest(dict(reversed(list(sdxl_vectors().items()))))


def test_optimizer_state_with_nested_values_round_trips(tmp_path):
    """bitsandbytes' 8-bit AdamW wraps its quantization tensors in a dict inside each parameter's state."""
    vectors = {"clip_l": torch.zeros(2, 4)}
    state = {
        "state": {0: {"step": 3, "wrapped": {"state1": torch.ones(8, dtype=torch.uint8), "absmax1": torch.ones(1)}}},
        "param_groups": [{"lr": 0.001, "betas": [0.9, 0.999], "params": [0]}],
    }
    path = str(tmp_path / "o.optimizer.safetensors")
    save_optimizer_state(path, state, vectors)
    loaded = load_optimizer_state(path, vectors)
    assert loaded["state"][0]["step"] == 3
    assert torch.equal(loaded["state"][0]["wrapped"]["state1"], torch.ones(8, dtype=torch.uint8))
    assert torch.equal(loaded["state"][0]["wrapped"]["absmax1"], torch.ones(1))
    assert loaded["param_groups"][0]["betas"] == [0.9, 0.999]
