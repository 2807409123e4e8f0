"""The test grid in the WebUI: every cell through its own txt2img, saved and labelled as txt2img saves them."""

from __future__ import annotations

import contextlib
import json
import os
from contextlib import closing

from PIL import Image

from modules import processing, shared

from lib_ti.hosts.a1111.embedding_db import embedding_record
from lib_ti.hosts.script_args import ScriptArgs, default_script_args


def grid_after_training(final_path: str, run_root: str, checkpoints: str, owns_state: bool) -> list[str]:
    """A test grid of a freshly trained embedding: txt2img's settings, the default strengths and prompts."""
    from lib_ti.grid.run import GridRequest

    name = os.path.splitext(os.path.basename(final_path))[0]
    request = GridRequest.from_dict({"embedding": name, "checkpoints": checkpoints}, txt2img_defaults())
    return run_grid_queued(request, run_root, owns_state).paths


def txt2img_defaults() -> dict:
    """The txt2img tab's defaults as the user configured them (ui-config.json)."""
    try:
        with open(shared.cmd_opts.ui_config_file, encoding="utf-8") as f:
            ui = json.load(f)
    except (OSError, ValueError):
        ui = {}
    return {
        "negative_prompt": ui.get("txt2img/Negative prompt/value", ""),
        "sampler_name": ui.get("txt2img/Sampling method/value", "DPM++ 2M"),
        "steps": ui.get("txt2img/Sampling steps/value", 20),
        "cfg_scale": ui.get("txt2img/CFG Scale/value", 7.0),
        "width": ui.get("txt2img/Width/value", 512),
        "height": ui.get("txt2img/Height/value", 512),
    }


def sampler_fields(sampler_name: str) -> dict:
    """The sampler and schedule type as the WebUI would correct them, so it has nothing to correct (and no
    'Sampler Scheduler autocorrection' warning per image); an empty name is the WebUI's default sampler."""
    from modules import sd_samplers

    name, scheduler = sd_samplers.get_sampler_and_scheduler(sampler_name or None, None, convert_automatic=False)
    return {"sampler_name": name, "scheduler": scheduler}


def render_cell(prompt: str, gen: dict, script_args: ScriptArgs, extra: dict) -> tuple[Image.Image, str, str]:
    """One image through txt2img (extra networks, emphasis, samplers, hires fix, always-on scripts), saved as usual."""
    from modules import scripts

    gen = {**gen, **sampler_fields(gen.get("sampler_name", ""))}
    p = processing.StableDiffusionProcessingTxt2Img(
        sd_model=shared.sd_model,
        prompt=prompt,
        n_iter=1,
        batch_size=1,
        do_not_save_grid=True,
        outpath_samples=shared.opts.outdir_samples or shared.opts.outdir_txt2img_samples,
        outpath_grids=shared.opts.outdir_grids or shared.opts.outdir_txt2img_grids,
        **gen,
    )
    args, positions = script_args
    args = list(args)
    for key, value in gen.items():  # the seed and sampler scripts would otherwise reset these to their defaults
        if key in positions:
            args[positions[key]] = value
    p.scripts = scripts.scripts_txt2img
    p.script_args = tuple(args)
    p.extra_generation_params.update(extra)
    with closing(p):
        processed = processing.process_images(p)
    image = processed.images[0]
    saved = getattr(image, "already_saved_as", "")
    return image, processed.infotexts[0], os.path.abspath(saved) if saved else ""


def save_grid(image: Image.Image, seed: int, title: str, info: str) -> str:
    from modules import images

    folder = shared.opts.outdir_grids or shared.opts.outdir_txt2img_grids
    path, _ = images.save_image(image, folder, "ti-grid", seed, title, shared.opts.grid_format, info=info, grid=True)
    return os.path.abspath(path)


def grid_font() -> str | None:
    from modules import paths

    from lib_ti.grid.image import font_from_webui_assets

    return shared.opts.font or font_from_webui_assets(paths.script_path)


class WebUIGridBackend:
    """``lib_ti.grid.run.GridBackend`` on the WebUI."""

    def __init__(self, run_root: str, should_stop=lambda: False):
        from modules import scripts

        self.run_root, self.stop_requested = run_root, should_stop
        self.script_args = default_script_args(scripts.scripts_txt2img)  # built once per runner, not per request

    @staticmethod
    def _metadata(record) -> dict:
        from lib_ti.embeddings.files import load_embedding

        if record.filename and record.filename.endswith(".safetensors"):
            return load_embedding(record.filename)[1]
        return {}

    @staticmethod
    def run_dir_of(name: str, run_root: str, meta: dict | None = None) -> str:
        """Where the embedding's checkpoints are: recorded in its file, else the default run folder."""
        if meta is None:
            meta = WebUIGridBackend._metadata(embedding_record(name))
        return meta.get("ti_run_dir") or os.path.join(run_root, name)

    def embedding(self, name: str):
        from lib_ti.grid.run import LoadedEmbedding

        record = embedding_record(name)
        vec = record.vec if isinstance(record.vec, dict) else {"clip_l": record.vec}
        meta = self._metadata(record)
        step = int(meta["step"]) if str(meta.get("step", "")).isdigit() else record.step
        vectors = {k: v.detach().float().cpu() for k, v in vec.items()}
        run_dir = self.run_dir_of(name, self.run_root, meta)
        try:
            data_dir = json.loads(meta.get("ti_settings", "{}")).get("train_data_dir", "")
        except ValueError:
            data_dir = ""
        return LoadedEmbedding(name, vectors, record.filename or "", record.shorthash or "", step, run_dir, data_dir)

    def clip_scorer(self):
        """A CLIP model from the setting (a local folder or a Hugging Face id already downloaded), never fetched."""
        from lib_ti.grid.quality import TransformersClip

        source = shared.opts.data.get("ti_trainer_clip_model") or "openai/clip-vit-large-patch14"
        try:
            from transformers import CLIPModel, CLIPProcessor

            model = CLIPModel.from_pretrained(source, local_files_only=True)
            processor = CLIPProcessor.from_pretrained(source, local_files_only=True)
        except Exception as e:  # offline, missing weights, not a CLIP model: all mean "no scores", said plainly
            return None, (
                f"no CLIP model could be loaded from {source!r} without downloading ({type(e).__name__}). "
                "Set Settings → TI Trainer → CLIP model to a folder with a CLIP model."
            )
        return TransformersClip(model, processor), ""

    def render(self, prompt, gen, extra):
        return render_cell(prompt, gen, self.script_args, extra)

    def save_grid(self, image, seed, title, info):
        return save_grid(image, seed, title, info)

    def progress(self, done: int, total: int, text: str) -> None:
        shared.state.job_count = total
        shared.state.job_no = done
        shared.state.textinfo = text

    def should_stop(self) -> bool:
        return bool(shared.state.interrupted) or self.stop_requested()

    def font_path(self):
        return grid_font()


def run_grid_queued(request, run_root: str, owns_state: bool, should_stop=lambda: False):
    """A grid through the WebUI's GPU queue (API calls) or inside the caller's queue slot (the tab)."""
    from modules import call_queue

    from lib_ti.grid.run import run_grid

    lock = call_queue.queue_lock if owns_state else contextlib.nullcontext()
    with lock:
        if owns_state:
            shared.state.begin(job="ti-trainer-grid")
        try:
            return run_grid(request, WebUIGridBackend(run_root, should_stop))
        finally:
            if owns_state:
                shared.state.end()
