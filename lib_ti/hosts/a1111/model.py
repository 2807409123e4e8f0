"""The WebUI's loaded model (SD1, SD2, SDXL) behind the trainer's ``ModelAdapter``.

Prompts are encoded by the WebUI's own hijacked text encoders, with the trained vectors registered in its
embedding database for the run: training sees prompts exactly as txt2img will.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from PIL import Image

from modules import devices, prompt_parser, sd_hijack, shared

from lib_ti.errors import UserError
from lib_ti.hosts.a1111.embedding_db import make_embedding, reload_embeddings, route_name, routed
from lib_ti.hosts.common.store import clear_conditioning_cache
from lib_ti.hosts.common.training import block_classes, checkpointing, weights_digest
from lib_ti.hosts.common.txt2img import preview_images
from lib_ti.training.model import SampleOptions, TrainOptions, default_autocast

UNET_MODULES = (
    "ldm.modules.attention",
    "ldm.modules.diffusionmodules.openaimodel",
    "sgm.modules.attention",
    "sgm.modules.diffusionmodules.openaimodel",
)


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
    """``lib_ti.training.model.ModelAdapter`` on ``shared.sd_model``."""

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
        embedding = make_embedding(token, vectors["clip_l"] if len(vectors) == 1 else vectors, vectors)
        try:
            for p, _ in params:
                p.requires_grad_(False)
            for wrapper, _ in trainable:  # sgm runs non-trainable embedders under no_grad
                wrapper.is_trainable = True
            route_name(token, embedding)  # not listed: the Extra Networks page expects a file behind each card
            self._route = (token, embedding)
            clear_conditioning_cache()
            with (
                checkpointing(options.gradient_checkpointing, block_classes(UNET_MODULES)),
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
            self._route = None
            reload_embeddings()

    def _keep_routed(self) -> None:
        """The token still reaches the trained vectors, also after the embedding list was reloaded meanwhile
        (Extra Networks' Refresh, /sdapi/v1/refresh-embeddings), which would otherwise end training silently."""
        token, embedding = getattr(self, "_route", None) or (None, None)
        if token and routed(token) is not embedding:
            route_name(token, embedding)

    def encode_text(self, prompts: list[str], size: tuple[int, int]):
        self._keep_routed()
        if self.family == "sdxl":
            batch = prompt_parser.SdConditioning(prompts, width=size[1], height=size[0])
            return self.m.get_learned_conditioning(batch)
        return self.m.cond_stage_model(prompts)

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond) -> torch.Tensor:
        return self.m.apply_model(noisy.to(devices.dtype_unet), timesteps, cond)

    def sample(
        self,
        prompts: list[str],
        seed: int,
        steps: int,
        size: tuple[int, int],
        options: list[SampleOptions] | None = None,
    ) -> list[Image.Image]:
        """Previews through the WebUI's own txt2img (the VAE comes back for them if it was offloaded); ``options``
        (kohya's prompt line options) set each preview's negative prompt, size, seed, steps and CFG scale."""
        vae = getattr(self.m, "first_stage_model", None)
        vae_away = vae is not None and next(vae.parameters()).device != devices.device  # offloaded while training
        if vae_away:
            vae.to(devices.device)
        self._keep_routed()
        try:
            return preview_images(self.m, prompts, seed, steps, size, options)
        finally:
            if vae_away:
                vae.to(devices.cpu)

    def weights_digest(self) -> str:
        """A hash of every weight, to show that training left the model unchanged."""
        return weights_digest(self.m.state_dict().items())

    def token_tables(self) -> dict[str, torch.Tensor]:
        """Each text encoder's input embedding table, for the inspector."""
        return {key: layer.wrapped.weight.detach().float().cpu() for key, (_, layer) in self.encoders.items()}

    def spell(self, token_id: int) -> str:
        wrapper = next(iter(self.encoders.values()))[0]
        tokenizer = getattr(wrapper, "tokenizer", None) or getattr(wrapper.wrapped, "tokenizer", None)
        if hasattr(tokenizer, "convert_ids_to_tokens"):
            return str(tokenizer.convert_ids_to_tokens(token_id)).replace("</w>", "")
        decoder = getattr(tokenizer, "decoder", {})
        return str(decoder.get(token_id, token_id)).replace("</w>", "")


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
    previous = sd_hijack.current_optimizer
    if sdp is None or getattr(previous, "name", None) == "sdp":
        yield
        return
    sd_hijack.model_hijack.apply_optimizations(sdp.title())
    try:
        yield
    finally:  # exactly the one in use before, not a fresh "Automatic" pick that may differ
        sd_hijack.model_hijack.apply_optimizations(previous.title() if previous is not None else None)
