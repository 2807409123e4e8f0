"""Every embedding format, written the way its tool writes it, read back; conversion; the inspector's figures."""

from __future__ import annotations

import base64
import json
import os

import pytest
import safetensors.torch
import torch
from PIL import Image, PngImagePlugin

from lib_ti.errors import UserError
from lib_ti.embeddings.files import save_embedding
from lib_ti.embeddings.formats import convert, read_embedding
from lib_ti.embeddings.inspector import Reference, history, inspect

V = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 10
G = torch.arange(18, dtype=torch.float32).reshape(3, 6) / 10


def webui_reads(path):
    """The WebUI's own acceptance rule for a .safetensors embedding: one tensor, or exactly clip_l and clip_g."""
    data = safetensors.torch.load_file(path)
    assert len(data) == 1 or set(data) == {"clip_l", "clip_g"}, sorted(data)
    return data


@pytest.mark.parametrize(
    "writer,fmt",
    [
        (lambda p: save_embedding(p + ".pt", {"clip_l": V}, "tok", 7), "A1111 .pt"),
        (lambda p: safetensors.torch.save_file({"emb_params": V}, p + ".safetensors"), "kohya / A1111 .safetensors"),
        (lambda p: safetensors.torch.save_file({"emp_params": V}, p + ".safetensors"), "OneTrainer"),
        (lambda p: torch.save({"<tok>": V[0]}, p + ".bin"), "diffusers"),
        (lambda p: safetensors.torch.save_file({"<tok>": V}, p + ".safetensors"), "diffusers"),
    ],
)
def test_single_encoder_formats_read_back(tmp_path, writer, fmt):
    base = str(tmp_path / "tok")
    writer(base)
    path = next(str(p) for p in tmp_path.iterdir())
    file = read_embedding(path)
    assert file.format == fmt
    expected = V[:1] if fmt == "diffusers" and path.endswith(".bin") else V
    assert torch.equal(file.vectors["clip_l"], expected) and set(file.vectors) == {"clip_l"}


def test_a1111_png_text_chunk(tmp_path):
    data = {"string_to_param": {"*": {"TORCHTENSOR": V.tolist()}}, "name": "pngtok", "step": 40}
    info = PngImagePlugin.PngInfo()
    info.add_text("sd-ti-embedding", base64.b64encode(json.dumps(data).encode()).decode())
    Image.new("RGB", (8, 8)).save(tmp_path / "e.png", pnginfo=info)
    file = read_embedding(str(tmp_path / "e.png"))
    assert file.format == "A1111 PNG" and file.name == "pngtok" and file.metadata["step"] == "40"
    assert torch.allclose(file.vectors["clip_l"], V)
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    with pytest.raises(UserError, match="no 'sd-ti-embedding'"):
        read_embedding(str(tmp_path / "plain.png"))


def test_sdxl_file_and_diffusers_pair(tmp_path):
    safetensors.torch.save_file({"clip_l": V, "clip_g": G}, tmp_path / "x.safetensors")
    assert read_embedding(str(tmp_path / "x.safetensors")).format.startswith("SDXL")
    safetensors.torch.save_file({"<tok>": G}, tmp_path / "learned_embeds_2.safetensors")
    safetensors.torch.save_file({"<tok>": V}, tmp_path / "learned_embeds.safetensors")
    pair = read_embedding(str(tmp_path / "learned_embeds_2.safetensors"), str(tmp_path / "learned_embeds.safetensors"))
    assert pair.format == "diffusers SDXL pair"
    assert torch.equal(pair.vectors["clip_l"], V) and torch.equal(pair.vectors["clip_g"], G)  # narrower is clip_l
    target = convert(pair, str(tmp_path / "out" / "tok.safetensors"))
    assert set(webui_reads(target)) == {"clip_l", "clip_g"}


def test_convert_keeps_metadata_and_never_overwrites_silently(tmp_path):
    save_embedding(str(tmp_path / "a.pt"), {"clip_l": V}, "tok", 12, {"ti_base_model_name": "m"})
    source = read_embedding(str(tmp_path / "a.pt"))
    target = str(tmp_path / "tok.safetensors")
    convert(source, target)
    assert list(webui_reads(target)) == ["emb_params"]
    with safetensors.safe_open(target, framework="pt") as f:
        meta = f.metadata()
    assert meta["step"] == "12" and meta["ti_source_format"] == "A1111 .pt" and meta["sd_checkpoint_name"] == "m"
    before = open(target, "rb").read()
    with pytest.raises(UserError, match="already exists"):
        convert(source, target)
    assert open(target, "rb").read() == before


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/ti-trainer-pwned",))


def test_bad_files_are_refused_and_code_is_never_run(tmp_path):
    safetensors.torch.save_file({"a": V, "b": V.clone()}, tmp_path / "two.safetensors")
    with pytest.raises(UserError, match="holds 2 tensors"):
        read_embedding(str(tmp_path / "two.safetensors"))
    torch.save({"string_to_param": {"*": V}, "x": Evil()}, tmp_path / "evil.pt")
    if os.path.exists("/tmp/ti-trainer-pwned"):
        os.remove("/tmp/ti-trainer-pwned")
    with pytest.raises(UserError, match="cannot be read safely"):
        read_embedding(str(tmp_path / "evil.pt"))
    assert not os.path.exists("/tmp/ti-trainer-pwned")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(UserError, match="not a readable"):
        read_embedding(str(tmp_path / "junk.safetensors"))
    with pytest.raises(UserError, match="does not exist"):
        read_embedding(str(tmp_path / "missing.pt"))


def test_inspector_figures_on_known_vectors(tmp_path):
    table = torch.zeros(5, 4)
    table[torch.arange(4), torch.arange(4)] = 1.0  # four unit tokens along the axes, one zero row
    table[4] = torch.tensor([0.0, 0.0, 0.0, 0.0])
    reference = Reference("SD1", {"clip_l": table}, spell=lambda i: f"tok{i}")
    vectors = torch.tensor([[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 9.0]])
    save_embedding(str(tmp_path / "e.safetensors"), {"clip_l": vectors}, "e", 5)
    report = inspect(read_embedding(str(tmp_path / "e.safetensors")), reference, top_k=1)
    enc = report["encoders"]["clip_l"]
    assert enc["norms"] == [2.0, 9.0] and enc["token_norm"] == 0.8 and enc["norm_ratio"] == [2.5, 11.25]
    assert enc["nearest"][0][0].startswith("tok1") and enc["nearest"][1][0].startswith("tok3")
    assert report["vectors"] == 2 and report["metadata"]["step"] == "5"
    assert any("vector(s) 1 (9.00) are up to 11× as long" in w and "over 3×" in w for w in report["warnings"])
    sdxl = Reference("SDXL", {"clip_l": table, "clip_g": torch.ones(5, 6)}, spell=str)
    assert any(
        "text encoders are clip_l 4 + clip_g 6 wide (SDXL)" in w
        for w in inspect(read_embedding(str(tmp_path / "e.safetensors")), sdxl)["warnings"]
    )
    save_embedding(str(tmp_path / "n.safetensors"), {"clip_l": torch.full((1, 4), float("nan"))}, "n", 1)
    assert any("NaN" in w for w in inspect(read_embedding(str(tmp_path / "n.safetensors")), reference)["warnings"])


def test_history_of_a_run(tmp_path):
    for step, scale in ((10, 1.0), (20, 2.0)):
        save_embedding(str(tmp_path / f"e-{step}.safetensors"), {"clip_l": torch.full((1, 4), scale)}, "e", step)
    (tmp_path / "e-log.csv").write_text("step,loss,lr,time\n10,0.5,0.01,0\n20,0.4,0.01,0\n")
    rows = history(str(tmp_path), "e", read_embedding)
    assert rows == [{"step": 10, "mean_norm": 2.0, "loss": 0.5}, {"step": 20, "mean_norm": 4.0, "loss": 0.4}]


def test_inspect_report_html_shows_figures_warnings_and_history(tmp_path):
    from lib_ti.ui.inspect_section import InspectActions

    class Inspection:
        def reference(self):
            return Reference("SD1", {"clip_l": torch.eye(4)}, spell=lambda i: f"word{i}")

        def embedding_path(self, name):
            raise UserError(f"Unknown embedding {name!r}.")

        def run_dir(self, name):
            return ""

    for step in (10, 20):
        save_embedding(
            str(tmp_path / f"e-{step}.safetensors"),
            {"clip_l": torch.full((1, 4), step / 10)},
            "e",
            step,
            {"ti_run_dir": str(tmp_path)},
        )
    (tmp_path / "e-log.csv").write_text("step,loss\n10,0.5\n20,0.4\n")
    html = InspectActions(Inspection()).inspect("", str(tmp_path / "e-20.safetensors"), "")
    assert "kohya / A1111 .safetensors" in html and "near word" in html and "over 3" in html
    assert html.count("<svg") == 2
    assert "Unknown embedding" in InspectActions(Inspection()).inspect("nope", "", "")


def test_inspecting_by_name_reads_the_run_folder_from_the_file(tmp_path):
    from lib_ti.api.routes import inspect_request

    run_dir = tmp_path / "runs" / "e"
    save_embedding(str(run_dir / "e-5.safetensors"), {"clip_l": torch.ones(1, 4)}, "e", 5)
    save_embedding(str(tmp_path / "e.safetensors"), {"clip_l": torch.ones(1, 4)}, "e", 5, {"ti_run_dir": str(run_dir)})

    class Inspection:  # an embedding the WebUI skipped: it knows the file, nothing else
        def reference(self):
            return Reference("SDXL", {"clip_l": torch.eye(4), "clip_g": torch.eye(6)}, spell=str)

        def embedding_path(self, name):
            return str(tmp_path / "e.safetensors")

        def run_dir(self, name):
            raise AssertionError("the file records its run folder")

    report = inspect_request({"embedding": "e"}, Inspection())
    assert [r["step"] for r in report["history"]] == [5]
    assert any("text encoders are clip_l 4 + clip_g 6 wide (SDXL)" in w for w in report["warnings"])
