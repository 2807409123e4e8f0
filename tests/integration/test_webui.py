"""Against a real running WebUI (A1111 v1.10 or Forge) with TI Trainer installed.

Set TI_TRAINER_WEBUI_URL (e.g. http://127.0.0.1:7860, started with --api) and optionally TI_TRAINER_WEBUI_DIR (the
WebUI's folder) or TI_TRAINER_WEBUI_DATA_DIR (its --data-dir), to check and clean the embeddings folder, and
TI_TRAINER_MODELS (comma-separated checkpoint titles to train on in turn, e.g.
tiny-sd1.safetensors,tiny-sd2.safetensors,tiny-sdxl.safetensors; for Forge e.g. sd15-random.safetensors).
Which WebUI it is comes from its settings (Forge has forge_* options), or from TI_TRAINER_WEBUI_KIND (a1111|forge).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import time

import pytest
import safetensors
import safetensors.torch

from helpers import make_dataset, xyz_axis_indices

URL = os.environ.get("TI_TRAINER_WEBUI_URL", "").rstrip("/")
WEBUI_DIR = os.environ.get("TI_TRAINER_WEBUI_DIR", "")
DATA_DIR = os.environ.get("TI_TRAINER_WEBUI_DATA_DIR", "") or WEBUI_DIR
MODELS = [m.strip() for m in os.environ.get("TI_TRAINER_MODELS", "").split(",") if m.strip()]

pytestmark = [
    pytest.mark.webui,
    pytest.mark.skipif(not URL, reason="integration tests need a running WebUI: set TI_TRAINER_WEBUI_URL"),
]


def ti_entries(kind, info):
    """How the infotext names the embeddings a prompt used: A1111 'TI hashes: "name: hash"', Forge 'TI: name'."""
    extra = info["extra_generation_params"]
    if kind == "forge":
        return set(extra.get("TI", "").split(", "))
    return set(extra.get("TI hashes", "").split(", "))


def ti_named(kind, infotext, token, shorthash):
    return f"TI: {token}" in infotext if kind == "forge" else f"{token}: {shorthash}" in infotext


def wait_for(http, job_id, timeout=900):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = http.get(f"{URL}/ti-trainer/v1/jobs/{job_id}", timeout=30).json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s")


def load_model(http, title):
    if title:
        http.post(f"{URL}/sdapi/v1/options", json={"sd_model_checkpoint": title}, timeout=600).raise_for_status()


def cleanup(name):
    """Remove what a test run wrote into the WebUI's folders: the embedding and the run folder."""
    if DATA_DIR:
        for ext in (".safetensors", ".pt"):
            path = os.path.join(DATA_DIR, "embeddings", name + ext)
            if os.path.exists(path):
                os.remove(path)
        shutil.rmtree(os.path.join(DATA_DIR, "outputs", "ti-trainer", name), ignore_errors=True)


@pytest.mark.parametrize("model", MODELS or [None])
def test_train_then_use_in_txt2img(http, tmp_path, model):
    load_model(http, model)
    token = f"titest{int(time.time() * 1000) % 10**8}"
    data = make_dataset(str(tmp_path / "data"), count=3, caption=token)
    try:
        response = http.post(
            f"{URL}/ti-trainer/v1/train",
            json={
                "train_data_dir": data,
                "token_string": token,
                "init_word": "painting",
                "num_vectors_per_token": 2,
                "max_train_steps": 4,
                "save_every_n_steps": 2,
                "resolution": 128,
                "learning_rate": "5e-3",
                "sample_every_n_steps": 4,
                "sample_steps": 2,
            },
            timeout=120,
        )
        assert response.status_code == 200, response.text
        job = wait_for(http, response.json()["job_id"])
        assert job["state"] == "done", job
        assert job["step"] == 4 and len(job["losses"]) == 4
        assert "Model weights verified unchanged." in job["messages"]
        assert job["final_path"].endswith(f"{token}.safetensors") and os.path.isfile(job["final_path"])
        if DATA_DIR:
            assert os.path.samefile(os.path.dirname(job["final_path"]), os.path.join(DATA_DIR, "embeddings"))

        keys = set(safetensors.torch.load_file(job["final_path"]))
        with safetensors.safe_open(job["final_path"], framework="pt") as f:
            meta = f.metadata()
        assert keys == ({"clip_l", "clip_g"} if meta["ti_model_family"] == "sdxl" else {"emb_params"})
        assert meta["step"] == "4" and meta["ti_base_model_hash"] and meta["ti_token"] == token

        listed = http.get(f"{URL}/sdapi/v1/embeddings", timeout=30).json()
        assert token in listed["loaded"], (
            f"{token} not in {list(listed['loaded'])} (skipped: {list(listed['skipped'])})"
        )
        assert listed["loaded"][token]["vectors"] == 2

        stamp = time.time()
        without, result = [
            http.post(
                f"{URL}/sdapi/v1/txt2img",
                json={"prompt": f"{prompt}portrait, {stamp}", "steps": 2, "width": 64, "height": 64, "seed": 1},
                timeout=600,
            ).json()
            for prompt in ("", f"({token}:1.2) ")
        ]
        info = json.loads(result["info"])
        with open(job["final_path"], "rb") as f:
            shorthash = hashlib.sha256(f.read()).hexdigest()[:12]
        # SDXL's two text encoders each report the embedding, so the WebUI may list it twice
        expected = {token} if http.kind == "forge" else {f"{token}: {shorthash}"}
        assert ti_entries(http.kind, info) == expected, info["extra_generation_params"]
        assert ti_entries(http.kind, json.loads(without["info"])) == {""}, "the embedding is named only where used"
        quoted = f"TI: {token}" if http.kind == "forge" else f'TI hashes: "{token}: {shorthash}'
        assert quoted in info["infotexts"][0]
        from PIL import Image

        assert Image.open(io.BytesIO(base64.b64decode(result["images"][0]))).size == (64, 64)
        assert result["images"][0] != without["images"][0], "the embedding changes the picture"
    finally:
        cleanup(token)


def test_bad_input_is_422_with_a_message(http, tmp_path):
    response = http.post(
        f"{URL}/ti-trainer/v1/train",
        json={"train_data_dir": str(tmp_path / "missing"), "token_string": "has space", "num_vectors_per_token": 99},
    )
    assert response.status_code == 422
    message = response.json()["detail"]["message"]
    assert "contains spaces" in message and "num_vectors_per_token" in message


def test_second_job_is_409_and_interrupt_keeps_a_loadable_embedding(http, tmp_path):
    load_model(http, MODELS[0] if MODELS else None)
    token = f"tiint{int(time.time() * 1000) % 10**8}"
    data = make_dataset(str(tmp_path / "data"), count=2, caption=token)
    body = {
        "train_data_dir": data,
        "token_string": token,
        "max_train_steps": 5000,
        "resolution": 64,
        "save_every_n_steps": 0,
    }
    try:
        first = http.post(f"{URL}/ti-trainer/v1/train", json=body, timeout=120).json()
        second = http.post(f"{URL}/ti-trainer/v1/train", json={**body, "token_string": token + "b"}, timeout=120)
        assert second.status_code == 409, second.text
        deadline = time.time() + 300
        while http.get(f"{URL}/ti-trainer/v1/jobs/{first['job_id']}").json()["step"] < 2 and time.time() < deadline:
            time.sleep(0.5)
        http.post(f"{URL}/sdapi/v1/interrupt", timeout=30).raise_for_status()  # the WebUI's own Interrupt
        job = wait_for(http, first["job_id"], timeout=300)
        assert job["state"] == "interrupted" and 2 <= job["step"] < 5000
        listed = http.get(f"{URL}/sdapi/v1/embeddings", timeout=30).json()
        assert token in listed["loaded"]
    finally:
        cleanup(token)


def test_resume_continues_and_txt2img_waits_for_training(http, tmp_path):
    load_model(http, MODELS[0] if MODELS else None)
    token = f"tires{int(time.time() * 1000) % 10**8}"
    data = make_dataset(str(tmp_path / "data"), count=2, caption=token)
    body = {"train_data_dir": data, "token_string": token, "resolution": 64, "save_every_n_steps": 0}
    steps = 30 if http.kind == "forge" else 150  # Forge runs full-size models: a few seconds a step on a CPU
    try:
        first = wait_for(
            http, http.post(f"{URL}/ti-trainer/v1/train", json={**body, "max_train_steps": 2}).json()["job_id"]
        )
        assert first["state"] == "done"
        second = http.post(
            f"{URL}/ti-trainer/v1/train",
            json={**body, "max_train_steps": steps, "weights": first["final_path"], "overwrite": True},
        ).json()
        # txt2img goes through the same GPU queue: it answers only once the training has let go of it
        http.post(
            f"{URL}/sdapi/v1/txt2img",
            json={"prompt": f"{token} {time.time()}", "steps": 1, "width": 64, "height": 64},
            timeout=600,
        ).raise_for_status()
        job = http.get(f"{URL}/ti-trainer/v1/jobs/{second['job_id']}").json()
        assert job["state"] == "done" and job["step"] == steps
        assert job["losses"][0][0] == 3, "the step count continues from the resumed embedding"
        assert any("Loaded the optimizer state" in m for m in job["messages"]), job["messages"]
    finally:
        cleanup(token)


def test_grid_after_training(http, tmp_path):
    load_model(http, MODELS[0] if MODELS else None)
    token = f"tigrid{int(time.time() * 1000) % 10**8}"
    data = make_dataset(str(tmp_path / "data"), count=2, caption=token)
    try:
        trained = http.post(
            f"{URL}/ti-trainer/v1/train",
            json={
                "train_data_dir": data,
                "token_string": token,
                "max_train_steps": 6,
                "save_every_n_steps": 3,
                "resolution": 64,
                "learning_rate": "0.05",
            },
        ).json()
        job = wait_for(http, trained["job_id"])
        assert job["state"] == "done", job
        response = http.post(
            f"{URL}/ti-trainer/v1/grid",
            json={
                "embedding": token,
                "strengths": "0.8, 1.2",
                "prompts": [f"[name] portrait {time.time()}"],
                "checkpoints": "all",
                "x": "checkpoint",
                "y": "strength",
                "z": "prompt",
                "steps": 2,
                "width": 64,
                "height": 64,
                "seed": 11,
                "sampler_name": "Euler",
            },
            timeout=600,
        )
        assert response.status_code == 200, response.text
        grid = response.json()
        geo = grid["geometry"]
        assert (geo["columns"], geo["rows"]) == (2, 3)  # step 3, final × without, 0.8, 1.2
        from PIL import Image

        image = Image.open(io.BytesIO(base64.b64decode(grid["images"][0])))
        assert image.size == (geo["margin_left"] + 2 * 64, geo["margin_top"] + 3 * 64)
        assert len(grid["cells"]) == 6 and all("Seed: 11" in c["infotext"] for c in grid["cells"])
        final = next(c for c in grid["cells"] if c["checkpoint"] == "final" and c["strength"] == "1.2")
        with open(job["final_path"], "rb") as f:
            assert ti_named(http.kind, final["infotext"], token, hashlib.sha256(f.read()).hexdigest()[:12])
        early = next(c for c in grid["cells"] if c["checkpoint"] == "3" and c["strength"] == "1.2")
        assert early["prompt"] == final["prompt"].replace(f"({token}:", f"({token}-3:")  # names the checkpoint
        assert Image.open(early["path"]).tobytes() != Image.open(final["path"]).tobytes()
        assert all(os.path.isfile(p) for p in grid["paths"])
        bad = http.post(f"{URL}/ti-trainer/v1/grid", json={"embedding": token, "strengths": "1.2x"})
        assert bad.status_code == 422 and "1.2x" in bad.json()["detail"]["message"]
        unknown = http.post(f"{URL}/ti-trainer/v1/grid", json={"embedding": token + "nope"})
        assert unknown.status_code == 422 and "Unknown embedding" in unknown.json()["detail"]["message"]
    finally:
        cleanup(token)


def test_xyz_plot_axes(http, tmp_path):
    load_model(http, MODELS[0] if MODELS else None)
    # the axes by their labels, as the WebUI lists them: other extensions add axes before or after ours
    script_info = http.get(f"{URL}/sdapi/v1/script-info", timeout=60).json()
    strength_index, checkpoint_index = xyz_axis_indices(script_info, ["TI: strength", "TI: checkpoint"])
    token = f"tixyz{int(time.time() * 1000) % 10**8}"
    data = make_dataset(str(tmp_path / "data"), count=2, caption=token)
    try:
        job = wait_for(
            http,
            http.post(
                f"{URL}/ti-trainer/v1/train",
                json={
                    "train_data_dir": data,
                    "token_string": token,
                    "max_train_steps": 4,
                    "save_every_n_steps": 2,
                    "resolution": 64,
                },
            ).json()["job_id"],
        )
        assert job["state"] == "done"
        script_args = [
            strength_index,
            "0.5, 1.5",
            [],
            checkpoint_index,
            "2, final",
            [],
            0,
            "",
            [],
            True,
            False,
            False,
            False,
            False,
            False,
            False,
            0,
            False,
        ]
        result = http.post(
            f"{URL}/sdapi/v1/txt2img",
            json={
                "prompt": f"{token} portrait {time.time()}",
                "steps": 1,
                "width": 64,
                "height": 64,
                "seed": 3,
                "script_name": "x/y/z plot",
                "script_args": script_args,
            },
            timeout=600,
        )
        assert result.status_code == 200, result.text
        prompts = [p.split(" portrait")[0] for p in json.loads(result.json()["info"])["all_prompts"]]
        assert prompts == [f"({token}-2:0.5)", f"({token}-2:1.5)", f"({token}:0.5)", f"({token}:1.5)"]
    finally:
        cleanup(token)


def test_inspect_and_convert(http, tmp_path):
    import torch

    load_model(http, MODELS[0] if MODELS else None)
    token = f"ticonv{int(time.time() * 1000) % 10**8}"
    # a diffusers-style single-token file with the loaded model's width, taken from a trained embedding's shape
    data = make_dataset(str(tmp_path / "data"), count=2, caption=token + "src")
    try:
        job = wait_for(
            http,
            http.post(
                f"{URL}/ti-trainer/v1/train",
                json={
                    "train_data_dir": data,
                    "token_string": token + "src",
                    "max_train_steps": 2,
                    "resolution": 64,
                    "save_every_n_steps": 1,
                },
            ).json()["job_id"],
        )
        report = http.post(f"{URL}/ti-trainer/v1/inspect", json={"embedding": token + "src"}).json()
        assert report["vectors"] == 1 and report["encoders"] and [r["step"] for r in report["history"]] == [1, 2]
        key = next(iter(report["encoders"]))
        assert len(report["encoders"][key]["nearest"][0]) == 3
        vectors = safetensors.torch.load_file(job["final_path"])
        diffusers_file = str(tmp_path / "learned_embeds.bin")
        torch.save({f"<{token}>": next(iter(vectors.values()))[0]}, diffusers_file)
        converted = http.post(f"{URL}/ti-trainer/v1/convert", json={"path": diffusers_file, "output_name": token})
        assert converted.status_code == 200, converted.text
        assert converted.json()["format"] == "diffusers"
        assert token in http.get(f"{URL}/sdapi/v1/embeddings").json()["loaded"]
        again = http.post(f"{URL}/ti-trainer/v1/convert", json={"path": diffusers_file, "output_name": token})
        assert again.status_code == 422 and "already exists" in again.json()["detail"]["message"]
    finally:
        cleanup(token)
        cleanup(token + "src")


def test_batch_queue_from_dataset_folders(http, tmp_path):
    load_model(http, MODELS[0] if MODELS else None)
    stamp = int(time.time() * 1000) % 10**8
    tokens = [f"tiqa{stamp}", f"tiqb{stamp}"]
    make_dataset(str(tmp_path / "sets" / tokens[0]), count=2, caption=tokens[0])
    make_dataset(str(tmp_path / "sets" / "second"), count=2, caption=tokens[1])
    (tmp_path / "sets" / "second" / "ti_trainer.json").write_text(
        json.dumps({"token_string": tokens[1], "max_train_steps": 3})
    )
    make_dataset(str(tmp_path / "sets" / "zbroken"), count=1)
    (tmp_path / "sets" / "zbroken" / "ti_trainer.json").write_text("{not json")
    try:
        response = http.post(
            f"{URL}/ti-trainer/v1/queue",
            json={
                "folder": str(tmp_path / "sets"),
                "base": {"max_train_steps": 2, "resolution": 64, "save_every_n_steps": 0},
            },
        )
        assert response.status_code == 200, response.text
        ids = {e["id"] for e in response.json()["added"]}
        deadline = time.time() + 600
        while time.time() < deadline:
            entries = [e for e in http.get(f"{URL}/ti-trainer/v1/queue").json()["entries"] if e["id"] in ids]
            if all(e["state"] not in ("queued", "running") for e in entries):
                break
            time.sleep(1)
        assert [(e["label"], e["state"]) for e in entries] == [
            ("second", "done"),
            (tokens[0], "done"),
            ("zbroken", "invalid"),
        ], entries
        assert entries[0]["step"] == 3 and entries[1]["step"] == 2 and "not valid JSON" in entries[2]["error"]
        loaded = http.get(f"{URL}/sdapi/v1/embeddings").json()["loaded"]
        assert all(t in loaded for t in tokens)
    finally:
        for token in tokens:
            cleanup(token)


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_files_the_webui_reads_are_inspected_and_converted(http, tmp_path):
    """A 2022 A1111 .pt (ParameterDict) and the textual_inversion repository's layout are read and converted; empty,
    damaged and code-carrying files each get their own message, and the code never runs."""
    import torch

    if http.kind == "forge":
        pytest.skip("Forge removed the WebUI's training, /sdapi/v1/create/embedding too, which makes the 2022 file")
    load_model(http, MODELS[0] if MODELS else None)
    token = f"tiold{int(time.time() * 1000) % 10**8}"
    try:
        made = http.post(
            f"{URL}/sdapi/v1/create/embedding",
            json={"name": token + "w", "num_vectors_per_token": 1, "init_text": "cat", "overwrite_old": False},
        ).json()
        report = http.post(f"{URL}/ti-trainer/v1/inspect", json={"path": made["info"].split(": ", 1)[1]}).json()
        if set(report["encoders"]) != {"clip_l"}:
            pytest.skip("the ParameterDict layouts are SD1/SD2 files")
        vectors = torch.randn(2, report["encoders"]["clip_l"]["width"]) * 0.02
        params = torch.nn.ParameterDict({"*": torch.nn.Parameter(vectors.clone())})
        files = {
            "old.pt": {"string_to_token": {"*": 265}, "string_to_param": params, "name": token, "step": 3000},
            "embeddings.pt": {"string_to_token": {"*": torch.tensor(265)}, "string_to_param": params},
            "evil.pt": {"string_to_param": {"*": vectors}, "x": RunsACommand(tmp_path / "ran")},
        }
        for name, data in files.items():
            torch.save(data, tmp_path / name)
        (tmp_path / "empty.pt").write_bytes(b"")
        (tmp_path / "truncated.pt").write_bytes((tmp_path / "old.pt").read_bytes()[:400])

        def inspect(name):
            return http.post(f"{URL}/ti-trainer/v1/inspect", json={"path": str(tmp_path / name)})

        assert inspect("old.pt").json()["format"] == "A1111 .pt (ParameterDict, 2022)"
        assert inspect("embeddings.pt").json()["format"] == "textual_inversion repository embeddings.pt"
        for name, message in (("empty.pt", "is empty"), ("truncated.pt", "is damaged"), ("evil.pt", "may hold code")):
            answer = inspect(name)
            assert answer.status_code == 422 and message in answer.json()["detail"]["message"], answer.text
        assert not (tmp_path / "ran").exists()
        converted = http.post(f"{URL}/ti-trainer/v1/convert", json={"path": str(tmp_path / "old.pt")})
        assert converted.status_code == 200 and converted.json()["name"] == token, converted.text
        assert token in http.get(f"{URL}/sdapi/v1/embeddings").json()["loaded"]
        if DATA_DIR:
            saved = safetensors.torch.load_file(os.path.join(DATA_DIR, "embeddings", token + ".safetensors"))
            assert torch.equal(saved["emb_params"], vectors)
    finally:
        cleanup(token)
        cleanup(token + "w")


def test_kohya_folder_trains_the_steps_kohya_counts(http, tmp_path):
    """img/3_mystyle: 3 images × 3 repeats in batches of 2 = 5 batches per epoch; 2 epochs = 10 steps."""
    folder = tmp_path / "img" / "3_mystyle"
    make_dataset(str(folder), count=3, caption=None, size=(64, 64))
    for i in range(3):
        (folder / f"{i:03d}.caption").write_text("mystyle, a test", encoding="utf-8")
    token = f"kohya{int(time.time())}"
    config = {
        "train_data_dir": str(tmp_path / "img"), "token_string": token, "init_word": "art", "train_batch_size": 2,
        "max_train_epochs": 2, "max_train_steps": "", "save_every_n_epochs": 1, "max_resolution": "64,64",
        "caption_extension": "", "template": "caption",
    }  # fmt: skip
    try:
        preview = http.post(f"{URL}/ti-trainer/v1/dataset/preview", json=config, timeout=120).json()
        assert (preview["images_with_repeats"], preview["batches_per_epoch"], preview["max_train_steps"]) == (9, 5, 10)
        assert preview["images"][0]["caption"] == "mystyle, a test"  # the .caption file, kohya's default
        job = http.post(f"{URL}/ti-trainer/v1/train", json=config, timeout=120).json()
        done = wait_for(http, job["job_id"])
        assert done["state"] == "done" and done["step"] == 10
        names = {os.path.basename(f) for f in done["files"]}
        assert {f"{token}-5.safetensors", f"{token}-10.safetensors"} <= names
    finally:
        cleanup(token)
