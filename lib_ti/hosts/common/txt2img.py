"""What both WebUIs do the same way with txt2img: its defaults, one image with its scripts, saving a grid, and
preview images while training."""

from __future__ import annotations

import json
import os
from contextlib import closing

from PIL import Image

from modules import processing, shared

from lib_ti.hosts.script_args import ScriptArgs
from lib_ti.training.model import SampleOptions


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


def preview_images(
    sd_model, prompts: list[str], seed: int, steps: int, size: tuple[int, int], options: list | None = None
) -> list[Image.Image]:
    """Previews through the WebUI's own txt2img while training, leaving the progress counters as they were;
    ``options`` (kohya's prompt line options) set each preview's negative prompt, size, seed, steps and CFG scale."""
    from lib_ti.hosts.common.store import clear_conditioning_cache

    state = shared.state
    saved = (state.job, state.job_no, state.job_count, state.textinfo)
    images = []
    try:
        for i, prompt in enumerate(prompts):
            if state.interrupted:
                break
            o = options[i] if options else SampleOptions()
            extra = {"cfg_scale": o.cfg_scale} if o.cfg_scale is not None else {}
            clear_conditioning_cache()
            p = processing.StableDiffusionProcessingTxt2Img(
                sd_model=sd_model,
                prompt=prompt,
                negative_prompt=o.negative_prompt,
                **sampler_fields(""),
                seed=seed if o.seed is None else o.seed,
                steps=o.steps or steps,
                width=o.width or size[1],
                height=o.height or size[0],
                **extra,
                do_not_save_grid=True,
                do_not_save_samples=True,
                do_not_reload_embeddings=True,
            )
            with closing(p):
                processed = processing.process_images(p)
            images += processed.images[:1]
    finally:
        state.job, state.job_no, state.job_count, state.textinfo = saved
        clear_conditioning_cache()
    return images
