"""The WebUI's loaded model (SD1, SD2, SDXL) behind the trainer's small interface, and the host services.

This is the only module of lib_ti that imports the WebUI's ``modules``. Prompts are encoded by the WebUI's own
hijacked text encoders, with the trained vectors registered in its embedding database for the run: training
sees prompts exactly as txt2img will.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from contextlib import closing
from typing import Iterator

import torch
from PIL import Image
from torch.utils.checkpoint import checkpoint

from modules import devices, processing, prompt_parser, sd_hijack, shared
from modules.textual_inversion.textual_inversion import Embedding

from lib_ti.errors import UserError
from lib_ti.model import TrainOptions, default_autocast


def _family(model) -> str:
    if getattr(model, "is_sdxl", False) and not getattr(model, "is_sdxl_inpaint", False):
        return "sdxl"
    if getattr(model, "is_sd3", False):
        raise UserError("SD3 models are not supported by TI Trainer; load an SD1, SD2 or SDXL model.")
    if getattr(model, "is_sdxl_inpaint", False) or getattr(getattr(model, "model", None), "conditioning_key", "") in (
        "hybrid",
        "concat",
    ):
        raise UserError("Inpainting and instruct-pix2pix models are not supported; load the base model instead.")
    if getattr(model, "is_sd2", False):
        return "sd2"
    if getattr(model, "is_sd1", False):
        return "sd1"
    raise UserError(f"The loaded model ({type(model).__name__}) is not an SD1, SD2 or SDXL model.")


def _token_layer(wrapper) -> torch.nn.Module:
    """The WebUI's EmbeddingsWithFixes layer inside one hijacked text encoder."""
    wrapped = wrapper.wrapped
    if hasattr(wrapped, "transformer"):
        return wrapped.transformer.text_model.embeddings.token_embedding
    return wrapped.model.token_embedding


class WebUIModel:
    """``lib_ti.model.ModelAdapter`` on ``shared.sd_model``."""

    def __init__(self):
        model = shared.sd_model
        if model is None:
            raise UserError("No Stable Diffusion model is loaded. Choose one at the top of the WebUI first.")
        self.m = model
        self.family = _family(model)
        self.prediction_type = "v" if getattr(model, "parameterization", "eps") == "v" else "eps"
        self.native_resolution = {"sd1": 512, "sd2": 768 if self.prediction_type == "v" else 512, "sdxl": 1024}[
            self.family
        ]
        info = getattr(model, "sd_checkpoint_info", None)
        self.model_name = getattr(info, "name_for_extra", "") or "unknown"
        self.model_hash = (getattr(info, "shorthash", None) or "") if info else ""
        self.device = devices.device
        self.encoders = self._encoders()
        self.embedding_dims = {key: layer.wrapped.weight.shape[1] for key, (_, layer) in self.encoders.items()}

    def _encoders(self) -> dict[str, tuple[object, torch.nn.Module]]:
        if self.family == "sdxl":
            wrappers = [e for e in self.m.conditioner.embedders if hasattr(e, "encode_embedding_init_text")]
        else:
            wrappers = [self.m.cond_stage_model]
        out = {}
        for wrapper in wrappers:
            layer = _token_layer(wrapper)
            out[getattr(layer, "textual_inversion_key", "clip_l")] = (wrapper, layer)
        return out

    def token_ids(self, text: str) -> list[int]:
        wrapper = next(iter(self.encoders.values()))[0]
        return list(wrapper.tokenize([text])[0])

    def token_vectors(self, ids: list[int]) -> dict[str, torch.Tensor]:
        out = {}
        for key, (_, layer) in self.encoders.items():
            weight = layer.wrapped.weight
            out[key] = weight[torch.tensor(ids, device=weight.device)].detach().float().cpu()
        return out

    def alphas_cumprod(self) -> torch.Tensor:
        return self.m.alphas_cumprod.detach().float()

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), devices.autocast():
            posterior = self.m.encode_first_stage(pixels.to(devices.device, devices.dtype_vae))
            z = posterior if isinstance(posterior, torch.Tensor) else posterior.mode()
            return self.m.get_first_stage_encoding(z).float()

    def autocast(self, mixed_precision: str):
        return default_autocast(self.device, mixed_precision)

    @contextlib.contextmanager
    def training(self, token: str, vectors: dict[str, torch.Tensor], options: TrainOptions) -> Iterator[None]:
        """Freeze the model, route ``token`` to the trained vectors, and put everything back afterwards."""
        params = [(p, p.requires_grad) for p in self.m.parameters()]
        trainable = [(w, getattr(w, "is_trainable", False)) for w, _ in self.encoders.values()]
        embedding = _embedding(token, vectors["clip_l"] if len(vectors) == 1 else vectors, vectors)
        try:
            for p, _ in params:
                p.requires_grad_(False)
            for wrapper, _ in trainable:  # sgm runs non-trainable embedders under no_grad
                wrapper.is_trainable = True
            sd_hijack.model_hijack.embedding_db.register_embedding_by_name(embedding, self.m, token)
            clear_conditioning_cache()
            with (
                _checkpointing(options.gradient_checkpointing),
                _sdp_attention(),
                _vae_offloaded(self.m, options),
                torch.inference_mode(False),
                torch.enable_grad(),
            ):
                yield
        finally:
            for p, flag in params:
                p.requires_grad_(flag)
            for wrapper, flag in trainable:
                wrapper.is_trainable = flag
            reload_embeddings()

    def encode_text(self, prompts: list[str], size: tuple[int, int]):
        if self.family == "sdxl":
            batch = prompt_parser.SdConditioning(prompts, width=size[1], height=size[0])
            return self.m.get_learned_conditioning(batch)
        return self.m.cond_stage_model(prompts)

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond) -> torch.Tensor:
        return self.m.apply_model(noisy.to(devices.dtype_unet), timesteps, cond)

    def sample(self, prompts: list[str], seed: int, steps: int, size: tuple[int, int]) -> list[Image.Image]:
        """Previews through the WebUI's own txt2img, leaving the progress counters as they were."""
        state = shared.state
        saved = (state.job, state.job_no, state.job_count, state.textinfo)
        images = []
        vae = getattr(self.m, "first_stage_model", None)
        vae_away = vae is not None and next(vae.parameters()).device != devices.device  # offloaded while training
        if vae_away:
            vae.to(devices.device)
        try:
            for prompt in prompts:
                if state.interrupted:
                    break
                clear_conditioning_cache()
                p = processing.StableDiffusionProcessingTxt2Img(
                    sd_model=self.m,
                    prompt=prompt,
                    seed=seed,
                    steps=steps,
                    width=size[1],
                    height=size[0],
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
            if vae_away:
                vae.to(devices.cpu)
        return images

    def weights_digest(self) -> str:
        """A hash of every weight, to show that training left the model unchanged."""
        h = hashlib.sha256()
        for name, tensor in sorted(self.m.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]


def clear_conditioning_cache() -> None:
    """The WebUI caches conditioning by prompt text, not by vectors: clear it whenever the vectors change."""
    processing.StableDiffusionProcessing.cached_c = [None, None]
    processing.StableDiffusionProcessing.cached_uc = [None, None]
    processing.StableDiffusionProcessingTxt2Img.cached_hr_c = [None, None]
    processing.StableDiffusionProcessingTxt2Img.cached_hr_uc = [None, None]


def reload_embeddings() -> None:
    """Reload the embedding database so new files work in txt2img without a restart."""
    clear_conditioning_cache()
    if shared.sd_model is not None:
        sd_hijack.model_hijack.embedding_db.load_textual_inversion_embeddings(force_reload=True)


def existing_embedding_names() -> set[str]:
    """Names the WebUI knows, after picking up files added or removed since its last look."""
    db = sd_hijack.model_hijack.embedding_db
    if shared.sd_model is not None:
        db.load_textual_inversion_embeddings()
    return set(db.word_embeddings) | set(db.skipped_embeddings)


def embeddings_dir() -> str:
    return shared.cmd_opts.embeddings_dir


@contextlib.contextmanager
def _vae_offloaded(model, options: TrainOptions) -> Iterator[None]:
    """Latents are cached before training, so the VAE may wait in system memory when the user asks."""
    vae = getattr(model, "first_stage_model", None)
    if not options.offload_vae or vae is None or devices.device.type != "cuda":
        yield
        return
    vae.to(devices.cpu)
    devices.torch_gc()
    try:
        yield
    finally:
        vae.to(devices.device)


@contextlib.contextmanager
def _sdp_attention() -> Iterator[None]:
    """PyTorch's scaled-dot-product attention while training: the fastest with a backward pass, and without the
    split/sliced variants' overhead; the user's own choice is applied again afterwards."""
    sdp = next((o for o in sd_hijack.optimizers if o.name == "sdp"), None)
    current = getattr(sd_hijack.current_optimizer, "name", None)
    if sdp is None or current == "sdp":
        yield
        return
    sd_hijack.model_hijack.apply_optimizations(sdp.title())
    try:
        yield
    finally:
        sd_hijack.model_hijack.apply_optimizations()


@contextlib.contextmanager
def _checkpointing(enabled: bool) -> Iterator[None]:
    """Recompute block activations in backward: less memory, more compute. Only when asked."""
    if not enabled:
        yield
        return
    classes = []
    for module_name in (
        "ldm.modules.attention",
        "ldm.modules.diffusionmodules.openaimodel",
        "sgm.modules.attention",
        "sgm.modules.diffusionmodules.openaimodel",
    ):
        module = __import__(module_name, fromlist=["_"])
        for cls_name in ("BasicTransformerBlock", "ResBlock"):
            cls = getattr(module, cls_name, None)
            if cls is not None and hasattr(cls, "_forward"):
                classes.append((cls, cls.forward))
    try:
        for cls, _ in classes:
            cls.forward = lambda self, *args, **kwargs: checkpoint(self._forward, *args, use_reentrant=False, **kwargs)
        yield
    finally:
        for cls, forward in classes:
            cls.forward = forward


class WebUIHost:
    """``lib_ti.jobs.Host`` on the WebUI: its GPU queue, folders, progress bar and Interrupt button.

    ``owns_state`` is True for API jobs; the tab's jobs run inside ``wrap_gradio_gpu_call``, which already
    holds the queue lock and begins and ends ``shared.state``.
    """

    def __init__(self, owns_state: bool):
        self.owns_state = owns_state

    def embeddings_dir(self) -> str:
        return embeddings_dir()

    def run_root(self) -> str:
        from modules import paths

        folder = shared.opts.data.get("ti_trainer_output_dir") or os.path.join("outputs", "ti-trainer")
        return folder if os.path.isabs(folder) else os.path.join(paths.data_path, folder)

    def existing_names(self) -> set[str]:
        return existing_embedding_names()

    def gpu_lock(self):
        from modules import call_queue

        return call_queue.queue_lock if self.owns_state else contextlib.nullcontext()

    def begin(self, job) -> None:
        if self.owns_state:
            shared.state.begin(job="ti-trainer")
        shared.state.job = "ti-trainer"
        shared.state.job_count = job.max_steps
        shared.state.textinfo = "Preparing the dataset…"
        self._digest = WebUIModel().weights_digest() if shared.opts.data.get("ti_trainer_verify_model") else None

    def progress(self, job, record) -> None:
        shared.state.job_no = record.step
        shared.state.textinfo = f"Step {record.step}/{record.max_steps}, loss {record.loss:.4f}, lr {record.lr:.2e}"

    def preview(self, job, images: list) -> None:
        if images:
            shared.state.assign_current_image(images[0])

    def should_stop(self) -> bool:
        return bool(shared.state.interrupted)

    def end(self, job) -> None:
        reload_embeddings()
        if getattr(self, "_digest", None) and shared.sd_model is not None:
            same = WebUIModel().weights_digest() == self._digest
            job.messages.append(
                "Model weights verified unchanged." if same else "WARNING: the model's weights changed!"
            )
        if job.state == "done" and job.final_path and shared.opts.data.get("ti_trainer_grid_after_training"):
            self._grid_after(job)
        if self.owns_state:
            shared.state.end()

    def _grid_after(self, job) -> None:
        """The optional test grid when training ends, so it is there when the user returns."""
        try:
            paths = grid_after_training(job.final_path, self.run_root(), "", owns_state=False)  # our queue slot
            job.messages.append("Test grid saved: " + ", ".join(paths))
        except UserError as e:
            job.messages.append(f"No test grid: {e}")


def grid_after_training(final_path: str, run_root: str, checkpoints: str, owns_state: bool) -> list[str]:
    """A test grid of a freshly trained embedding: txt2img's settings, the default strengths and prompts."""
    from lib_ti.grid_run import GridRequest

    name = os.path.splitext(os.path.basename(final_path))[0]
    request = GridRequest.from_dict({"embedding": name, "checkpoints": checkpoints}, txt2img_defaults())
    return run_grid_queued(request, run_root, owns_state).paths


# --- the test grid: every cell through the WebUI's own txt2img -----------------------------------------------------


def embedding_record(name: str):
    """The WebUI's loaded Embedding of that name, or a message saying why it cannot be tested."""
    db = sd_hijack.model_hijack.embedding_db
    existing_embedding_names()
    if name in db.word_embeddings:
        return db.word_embeddings[name]
    if name in db.skipped_embeddings:
        skipped = db.skipped_embeddings[name]
        raise UserError(
            f"The embedding {name!r} does not fit the loaded model: its vectors are {skipped.shape} wide, "
            f"the model needs {db.expected_shape} (an SD1 embedding does not work on SDXL, and so on)."
        )
    raise UserError(f"Unknown embedding {name!r}. Known: {', '.join(sorted(db.word_embeddings)) or 'none'}.")


def _embedding(name: str, vec, vectors: dict[str, torch.Tensor], shorthash: str | None = None) -> Embedding:
    """A WebUI Embedding record for vectors that live in memory (the run's, a checkpoint's, scaled ones)."""
    embedding = Embedding(vec, name)
    embedding.vectors = next(iter(vectors.values())).shape[0]
    embedding.shape = sum(v.shape[-1] for v in vectors.values())
    if shorthash:
        embedding.hash = embedding.shorthash = shorthash
    return embedding


def _webui_vec(vectors: dict[str, torch.Tensor]):
    moved = {k: v.to(devices.device, torch.float32) for k, v in vectors.items()}
    return moved["clip_l"] if set(moved) == {"clip_l"} else moved


@contextlib.contextmanager
def embedding_override(name: str, vectors: dict[str, torch.Tensor], shorthash: str) -> Iterator[None]:
    """For one cell, prompts naming ``name`` use these vectors; the WebUI's own entry comes back afterwards."""
    db = sd_hijack.model_hijack.embedding_db
    original = db.word_embeddings.get(name)
    db.register_embedding_by_name(_embedding(name, _webui_vec(vectors), vectors, shorthash), shared.sd_model, name)
    clear_conditioning_cache()
    try:
        yield
    finally:
        db.register_embedding_by_name(original, shared.sd_model, name)
        clear_conditioning_cache()


def default_script_args(runner) -> tuple[list, dict[str, int]]:
    """Every script's UI defaults, as the WebUI's API builds them, so always-on scripts run as in txt2img;
    and where the API's field names (seed, steps, sampler_name…) sit among them, since scripts set those."""
    import gradio as gr

    args: list = [None] * max([1] + [s.args_to for s in runner.scripts])
    args[0] = 0
    positions: dict[str, int] = {}
    with gr.Blocks():
        for script in runner.scripts:
            controls = script.ui(script.is_img2img)
            if not controls:
                continue
            args[script.args_from : script.args_to] = [c.value for c in controls]
            if script.alwayson:
                for paste in getattr(script, "infotext_fields", None) or []:
                    api_name = getattr(paste, "api", None)
                    index = next((i for i, c in enumerate(controls) if c is getattr(paste, "component", None)), None)
                    if api_name and index is not None:
                        positions[api_name] = script.args_from + index
    return args, positions


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


def render_cell(
    prompt: str, gen: dict, script_args: tuple[list, dict[str, int]], extra: dict
) -> tuple[Image.Image, str, str]:
    """One image through txt2img (extra networks, emphasis, samplers, hires fix, always-on scripts), saved as usual."""
    from modules import scripts

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

    from lib_ti.grid_image import font_from_webui_assets

    return shared.opts.font or font_from_webui_assets(paths.script_path)


class WebUIGridBackend:
    """``lib_ti.grid_run.GridBackend`` on the WebUI."""

    def __init__(self, run_root: str, should_stop=lambda: False):
        from modules import scripts

        self.run_root, self.stop_requested = run_root, should_stop
        self.script_args = default_script_args(scripts.scripts_txt2img)

    @staticmethod
    def _metadata(record) -> dict:
        from lib_ti.files import load_embedding

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
        from lib_ti.grid_run import LoadedEmbedding

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
        from lib_ti.quality import TransformersClip

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

    def override(self, name, vectors, shorthash):
        return embedding_override(name, vectors, shorthash)

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

    from lib_ti.grid_run import run_grid

    lock = call_queue.queue_lock if owns_state else contextlib.nullcontext()
    with lock:
        if owns_state:
            shared.state.begin(job="ti-trainer-grid")
        try:
            return run_grid(request, WebUIGridBackend(run_root, should_stop))
        finally:
            if owns_state:
                shared.state.end()


# --- X/Y/Z plot axes ---------------------------------------------------------------------------------------------


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
    from lib_ti.grid import names_in_prompt, reweight

    names = names_in_prompt(p.prompt, sorted(existing_embedding_names(), key=len, reverse=True))
    if not names:
        raise RuntimeError("TI: strength found no embedding in the prompt.")
    for name in names:
        p.prompt = reweight(p.prompt, name, float(x))


def xyz_apply_checkpoint(p, x, xs) -> None:
    """Use the embedding's checkpoint at step x: registered as '<name>-<step>' and the prompt rewritten to it."""
    from lib_ti.files import load_embedding
    from lib_ti.grid import names_in_prompt, rename
    from lib_ti.grid_run import file_shorthash
    from lib_ti.paths import list_checkpoints

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
        embedding = _embedding(alias, _webui_vec(vectors), vectors, file_shorthash(path))
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


# --- inspector and converter ---------------------------------------------------------------------------------------


class WebUIInspection:
    """What the inspector needs from the WebUI: the loaded model's token tables, embedding files, reloading."""

    def __init__(self, run_root: str):
        self.run_root = run_root

    def reference(self):
        from lib_ti.inspector import Reference

        if shared.sd_model is None:
            return None
        model = WebUIModel()
        wrapper = next(iter(model.encoders.values()))[0]
        tokenizer = getattr(wrapper, "tokenizer", None) or getattr(wrapper.wrapped, "tokenizer", None)

        def spell(token_id: int) -> str:
            if hasattr(tokenizer, "convert_ids_to_tokens"):
                return str(tokenizer.convert_ids_to_tokens(token_id)).replace("</w>", "")
            decoder = getattr(tokenizer, "decoder", {})
            return str(decoder.get(token_id, token_id)).replace("</w>", "")

        tables = {key: layer.wrapped.weight.detach().float().cpu() for key, (_, layer) in model.encoders.items()}
        return Reference(model.family.upper(), tables, spell)

    def embedding_path(self, name: str) -> str:
        db = sd_hijack.model_hijack.embedding_db
        existing_embedding_names()
        record = db.word_embeddings.get(name) or db.skipped_embeddings.get(name)
        if record is None or not record.filename:
            raise UserError(f"Unknown embedding {name!r}.")
        return record.filename

    def run_dir(self, name: str) -> str:
        """The default run folder, for embeddings whose file does not record one."""
        return os.path.join(self.run_root, name)

    def embeddings_dir(self) -> str:
        return embeddings_dir()

    def after_convert(self) -> None:
        reload_embeddings()
