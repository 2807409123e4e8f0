"""Where a run writes, and the refusals that protect what the user already has."""

import os

import pytest

from lib_ti.training.config import TrainConfig
from lib_ti.errors import UserError
from lib_ti.training.paths import existing_embedding_files, list_checkpoints, plan_paths


def cfg(**kw):
    return TrainConfig(token_string="mystyle", train_data_dir="/data", **kw)


@pytest.fixture
def dirs(tmp_path):
    emb = tmp_path / "embeddings"
    runs = tmp_path / "runs"
    emb.mkdir()
    return str(emb), str(runs)


def touch(path, data=b"x"):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(str(path), "wb") as f:
        f.write(data)
    return str(path)


def test_plan_paths_fresh(dirs):
    emb, runs = dirs
    paths = plan_paths(cfg(), emb, runs, set())
    assert paths.name == "mystyle"
    assert paths.final == os.path.join(emb, "mystyle.safetensors")
    assert paths.run_dir == os.path.join(runs, "mystyle")
    assert paths.checkpoint(100) == os.path.join(runs, "mystyle", "mystyle-100.safetensors")
    assert paths.optimizer_file(100) == os.path.join(runs, "mystyle", "mystyle-100.optimizer.safetensors")
    assert paths.log_file.endswith("mystyle-log.csv") and paths.config_file.endswith("mystyle-config.json")
    assert paths.samples_dir == os.path.join(runs, "mystyle", "samples")
    assert not os.path.exists(paths.run_dir)  # planning writes nothing


def test_plan_paths_pt_and_output_name(dirs):
    emb, runs = dirs
    paths = plan_paths(cfg(output_name="v2", save_model_as="pt"), emb, runs, set())
    assert paths.final == os.path.join(emb, "v2.pt")
    assert paths.checkpoint(5) == os.path.join(runs, "v2", "v2-5.pt")


def test_plan_paths_output_dir(dirs, tmp_path):
    emb, runs = dirs
    out = str(tmp_path / "elsewhere")
    assert plan_paths(cfg(output_dir=out), emb, runs, set()).run_dir == out


def test_embeddings_dir_missing_is_fine(tmp_path):
    paths = plan_paths(cfg(), str(tmp_path / "no_embeddings"), str(tmp_path / "runs"), set())
    assert paths.final.endswith("mystyle.safetensors")


def test_refuses_existing_safetensors(dirs):
    emb, runs = dirs
    existing = touch(os.path.join(emb, "mystyle.safetensors"))
    with pytest.raises(UserError) as info:
        plan_paths(cfg(), emb, runs, set())
    assert existing in str(info.value) and "overwrite" in str(info.value)
    assert plan_paths(cfg(overwrite=True), emb, runs, set()).final == existing


def test_refuses_pt_in_subfolder(dirs):
    emb, runs = dirs
    existing = touch(os.path.join(emb, "old", "deeper", "mystyle.pt"))
    with pytest.raises(UserError) as info:
        plan_paths(cfg(), emb, runs, set())  # saving as .safetensors still clashes by name
    assert existing in str(info.value)
    plan_paths(cfg(overwrite=True), emb, runs, set())


def test_refuses_name_in_existing_set(dirs):
    emb, runs = dirs
    with pytest.raises(UserError) as info:
        plan_paths(cfg(), emb, runs, {"other", "mystyle"})
    assert "'mystyle'" in str(info.value) and "embedding list" in str(info.value)
    plan_paths(cfg(overwrite=True), emb, runs, {"mystyle"})
    plan_paths(cfg(), emb, runs, {"other"})


def test_other_names_and_files_do_not_clash(dirs):
    emb, runs = dirs
    touch(os.path.join(emb, "mystyle2.safetensors"))
    touch(os.path.join(emb, "mystyle.txt"))
    touch(os.path.join(emb, "mystyle-100.pt"))
    touch(os.path.join(emb, "sub", "MyStyleX.pt"))
    plan_paths(cfg(), emb, runs, set())


def test_existing_embedding_files_extensions(tmp_path):
    touch(tmp_path / "a" / "n.safetensors")
    touch(tmp_path / "n.PT")
    touch(tmp_path / "n.bin")
    touch(tmp_path / "n.png")
    found = sorted(os.path.relpath(p, str(tmp_path)) for p in existing_embedding_files(str(tmp_path), "n"))
    assert found == sorted([os.path.join("a", "n.safetensors"), "n.PT", "n.bin"])


@pytest.mark.parametrize("sub", ["", "runs", os.path.join("a", "b")])
def test_refuses_output_dir_inside_embeddings(dirs, sub):
    emb, runs = dirs
    out = os.path.join(emb, sub) if sub else emb
    with pytest.raises(UserError) as info:
        plan_paths(cfg(output_dir=out, overwrite=True), emb, runs, set())
    assert "inside the embeddings folder" in str(info.value)


def test_refuses_run_root_inside_embeddings(dirs):
    emb, _ = dirs
    with pytest.raises(UserError, match="inside the embeddings folder"):
        plan_paths(cfg(), emb, os.path.join(emb, "runs"), set())


def test_sibling_folder_with_common_prefix_is_not_inside(dirs, tmp_path):
    emb, runs = dirs
    out = str(tmp_path / "embeddings_runs")  # shares the prefix "embeddings" but is not inside it
    assert plan_paths(cfg(output_dir=out), emb, runs, set()).run_dir == out


def test_refuses_output_dir_inside_embeddings_through_symlink(dirs, tmp_path):
    emb, runs = dirs
    link = tmp_path / "link"
    os.symlink(emb, str(link))
    with pytest.raises(UserError, match="inside the embeddings folder"):
        plan_paths(cfg(output_dir=str(link / "x")), emb, runs, set())


def test_refuses_run_dir_with_checkpoints(dirs):
    emb, runs = dirs
    run_dir = os.path.join(runs, "mystyle")
    touch(os.path.join(run_dir, "mystyle-100.safetensors"))
    with pytest.raises(UserError) as info:
        plan_paths(cfg(), emb, runs, set())
    assert run_dir in str(info.value) and "checkpoints" in str(info.value)
    assert plan_paths(cfg(overwrite=True), emb, runs, set()).run_dir == run_dir
    assert (
        plan_paths(cfg(weights=os.path.join(run_dir, "mystyle-100.safetensors")), emb, runs, set()).run_dir == run_dir
    )


def test_run_dir_with_only_other_files_is_fine(dirs):
    emb, runs = dirs
    run_dir = os.path.join(runs, "mystyle")
    touch(os.path.join(run_dir, "mystyle-log.csv"))
    touch(os.path.join(run_dir, "mystyle-config.json"))
    touch(os.path.join(run_dir, "mystyle-100.optimizer.safetensors"))
    touch(os.path.join(run_dir, "other-100.safetensors"))
    assert plan_paths(cfg(), emb, runs, set()).run_dir == run_dir


def test_list_checkpoints(tmp_path):
    run = str(tmp_path)
    for name in [
        "n-1000.safetensors",
        "n-50.safetensors",
        "n-200.pt",
        "n-200.optimizer.safetensors",
        "n-log.csv",
        "n-config.json",
        "n-final.safetensors",
        "n-.safetensors",
        "n-10.txt",
        "n-x-10.safetensors",
        "nn-5.safetensors",
        "other-7.safetensors",
        "n.safetensors",
    ]:
        touch(os.path.join(run, name))
    assert list_checkpoints(run, "n") == [
        (50, os.path.join(run, "n-50.safetensors")),
        (200, os.path.join(run, "n-200.pt")),
        (1000, os.path.join(run, "n-1000.safetensors")),
    ]


def test_list_checkpoints_name_with_glob_characters(tmp_path):
    run = tmp_path / "run[1]"
    touch(run / "a[b]-10.pt")
    touch(run / "ab-20.pt")
    assert list_checkpoints(str(run), "a[b]") == [(10, str(run / "a[b]-10.pt"))]


def test_list_checkpoints_missing_dir(tmp_path):
    assert list_checkpoints(str(tmp_path / "nope"), "n") == []
