"""The X/Y/Z plot axes 'TI: strength' and 'TI: checkpoint'."""

from __future__ import annotations

from modules import sd_hijack, shared

from lib_ti.hosts.a1111.embedding_db import existing_embedding_names, make_embedding, webui_vec
from lib_ti.hosts.a1111.grid import WebUIGridBackend
from lib_ti.hosts.a1111.host import WebUIHost

def find_xyz_module():
    """The WebUI's bundled X/Y/Z plot script module, or None when it is missing or changed."""
    from modules import scripts

    for data in scripts.scripts_data:
        if data.script_class.__module__ in ("xyz_grid.py", "scripts.xyz_grid") and hasattr(data, "module"):
            module = data.module
            if hasattr(module, "AxisOption") and isinstance(getattr(module, "axis_options", None), list):
                return module
    return None


def xyz_apply_strength(p, x, xs) -> None:
    from lib_ti.grid.plan import names_in_prompt, reweight

    names = names_in_prompt(p.prompt, sorted(existing_embedding_names(), key=len, reverse=True))
    if not names:
        raise RuntimeError("TI: strength found no embedding in the prompt.")
    for name in names:
        p.prompt = reweight(p.prompt, name, float(x))


def xyz_apply_checkpoint(p, x, xs) -> None:
    """Use the embedding's checkpoint at step x: registered as '<name>-<step>' and the prompt rewritten to it."""
    from lib_ti.embeddings.files import load_embedding
    from lib_ti.grid.plan import names_in_prompt, rename
    from lib_ti.grid.run import file_shorthash
    from lib_ti.training.paths import list_checkpoints

    label = str(x).strip()
    if label.lower() == "final":
        return
    names = names_in_prompt(p.prompt, sorted(existing_embedding_names(), key=len, reverse=True))
    host = WebUIHost(owns_state=False)
    for name in names:
        run_dir = WebUIGridBackend.run_dir_of(name, host.run_root())
        found = dict(list_checkpoints(run_dir, name))
        if not label.isdigit() or int(label) not in found:
            raise RuntimeError(
                f"TI: checkpoint: {name} has no checkpoint at step {label} in {run_dir} "
                f"(saved: {', '.join(map(str, sorted(found))) or 'none'})."
            )
        path = found[int(label)]
        alias = f"{name}-{label}"
        vectors = load_embedding(path)[0]
        embedding = make_embedding(alias, webui_vec(vectors), vectors, file_shorthash(path))
        sd_hijack.model_hijack.embedding_db.register_embedding_by_name(embedding, shared.sd_model, alias)
        p.prompt = rename(p.prompt, name, alias)


def add_xyz_axes() -> str:
    """Add 'TI: strength' and 'TI: checkpoint' to the X/Y/Z plot; says what happened, for the log."""
    module = find_xyz_module()
    if module is None:
        return "TI Trainer: the X/Y/Z plot script was not found (or has changed); its TI axes are skipped."
    if any(getattr(o, "label", "").startswith("TI: ") for o in module.axis_options):
        return "TI Trainer: X/Y/Z axes already added."
    module.axis_options.extend(
        [
            module.AxisOption("TI: strength", float, xyz_apply_strength),
            module.AxisOption("TI: checkpoint", str, xyz_apply_checkpoint),
        ]
    )
    return "TI Trainer: added X/Y/Z plot axes 'TI: strength' and 'TI: checkpoint'."


