"""Forge's loaded model (SD1, SD2, SDXL) behind the trainer's ``ModelAdapter``.

Prompts go through Forge's own text-processing engines with the trained vectors registered in their embedding
databases (emphasis, chunking, clip skip as in txt2img); the UNet is called directly, without LoRAs or other
patches, as A1111's adapter trains on the bare model.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from PIL import Image

from modules import shared

from lib_ti.errors import UserError
from lib_ti.hosts.common.store import clear_conditioning_cache
from lib_ti.hosts.common.training import block_classes, checkpointing, weights_digest
from lib_ti.hosts.common.txt2img import preview_images
from lib_ti.hosts.forge import autograd, quiet
from lib_ti.hosts.forge.embedding_db import make_embedding, reload_embeddings
from lib_ti.training.model import SampleOptions, TrainOptions, default_autocast

PREDICTION_TYPES = {"epsilon": "eps", "eps": "eps", "v_prediction": "v"}


def _loaded_model():
    """The model the user chose; Forge loads it at the first generation, so load it now if it is not yet."""
    from modules import sd_models

    model, _ = sd_models.forge_model_reload()
    if model is None:
        raise UserError("No Stable Diffusion model is loaded. Choose one at the top of the WebUI first.")
    return model


def _engines(model) -> dict[str, object]:
    """The text-processing engine per text encoder, keyed as embedding files key them (SD2's too is 'clip_l')."""
    if getattr(model, "is_sdxl", False):
        if not hasattr(model, "text_processing_engine_l"):
            raise UserError("SDXL refiner models are not supported by TI Trainer; load an SDXL base model.")
        return {"clip_l": model.text_processing_engine_l, "clip_g": model.text_processing_engine_g}
    if getattr(model, "is_sd1", False) or getattr(model, "is_sd2", False):
        return {"clip_l": model.text_processing_engine}
    raise UserError(
        f"The loaded model ({type(model).__name__}) is not an SD1, SD2 or SDXL model; TI Trainer cannot train "
        "Flux, SD3 or Chroma embeddings."
    )


def _family(model) -> str:
    if getattr(model, "is_inpaint", False):
        raise UserError("Inpainting models are not supported; load the base model instead.")
    return "sdxl" if model.is_sdxl else "sd2" if model.is_sd2 else "sd1"


def _token_layer(engine) -> torch.nn.Module:
    """The nn.Embedding inside Forge's CLIPEmbeddingForTextualInversion wrapper."""
    return engine.text_encoder.transformer.text_model.embeddings.token_embedding.wrapped


class WebUIModel:
    """``lib_ti.training.model.ModelAdapter`` on Forge's ``shared.sd_model`` (a ``backend.diffusion_engine``)."""

    def __init__(self):
        model = _loaded_model()
        self.engines = _engines(model)
        self.m = model
        self.family = _family(model)
        self.originals = model.forge_objects_original
        predictor = self.originals.unet.model.predictor
        kind = PREDICTION_TYPES.get(getattr(predictor, "prediction_type", ""))
        if kind is None or not hasattr(predictor, "alphas_cumprod"):
            raise UserError(f"The loaded model's prediction type ({predictor.prediction_type}) is not supported.")
        self.predictor, self.prediction_type = predictor, kind
        self.native_resolution = {"sd1": 512, "sd2": 768 if kind == "v" else 512, "sdxl": 1024}[self.family]
        info = getattr(model, "sd_checkpoint_info", None)
        self.model_name = getattr(info, "name_for_extra", "") or "unknown"
        self.model_hash = getattr(info, "shorthash", None) or getattr(model, "sd_model_hash", None) or ""
        self.device = self.originals.unet.load_device
        self.embedding_dims = {key: _token_layer(e).weight.shape[1] for key, e in self.engines.items()}

    def token_ids(self, text: str) -> list[int]:
        return list(self.engines["clip_l"].tokenize([text])[0])

    def token_vectors(self, ids: list[int]) -> dict[str, torch.Tensor]:
        out = {}
        for key, engine in self.engines.items():
            weight = _token_layer(engine).weight
            out[key] = weight[torch.tensor(ids, device=weight.device)].detach().float().cpu()
        return out

    def alphas_cumprod(self) -> torch.Tensor:
        with torch.inference_mode(False):
            return self.predictor.alphas_cumprod.detach().float().clone()

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        latents = self.m.encode_first_stage(pixels.float())  # Forge runs it in inference mode
        with torch.inference_mode(False):
            return latents.clone().float()

    def autocast(self, mixed_precision: str):
        return default_autocast(self.device, mixed_precision)

    def _ready(self) -> None:
        """The bare model (no LoRA) on its device, with weights autograd can use; again after each preview."""
        from backend import memory_management

        self.m.forge_objects = self.originals.shallow_copy()
        memory_management.load_models_gpu([self.originals.unet, self.originals.clip.patcher])
        autograd.ordinary_weights([self.originals.unet.model, self.originals.clip.cond_stage_model])

    @contextlib.contextmanager
    def training(self, token: str, vectors: dict[str, torch.Tensor], options: TrainOptions) -> Iterator[None]:
        """Route ``token`` to the trained vectors in every engine, and put everything back afterwards."""
        from backend.text_processing import classic_engine

        saved_objects, saved_extras = self.m.forge_objects, dict(classic_engine.last_extra_generation_params)
        blocks = block_classes([autograd.UNET_MODULE])
        try:
            self._ready()
            embedding = make_embedding(token, vectors)
            for engine in self.engines.values():
                engine.embeddings.register_embedding_by_name(embedding, token)
            clear_conditioning_cache()
            with (
                checkpointing(options.gradient_checkpointing, blocks),
                autograd.out_of_place_blocks(blocks),
                autograd.pytorch_attention(),
                torch.inference_mode(False),
                torch.enable_grad(),
            ):
                yield
        finally:
            self.m.forge_objects = saved_objects
            classic_engine.last_extra_generation_params = saved_extras
            reload_embeddings()

    def encode_text(self, prompts: list[str], size: tuple[int, int]):
        from backend.text_processing import classic_engine

        # the engines note the embeddings they used for the next infotext, and print each one: training's prompts
        # must not be noted, nor fill the console at every step
        saved = dict(classic_engine.last_extra_generation_params)
        try:
            with quiet.without_lines(classic_engine):
                if self.family != "sdxl":
                    return self.engines["clip_l"](prompts)
                return self._sdxl_conditioning(prompts, size)
        finally:
            classic_engine.last_extra_generation_params = saved

    def _sdxl_conditioning(self, prompts: list[str], size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Both encoders' hidden states side by side, and the pooled output with the size conditioning."""
        cond_l = self.engines["clip_l"](prompts)
        cond_g, pooled = self.engines["clip_g"](prompts)
        height, width = size
        numbers = [height, width, shared.opts.sdxl_crop_top, shared.opts.sdxl_crop_left, height, width]
        sizes = torch.cat([self.m.embedder(torch.tensor([float(n)])) for n in numbers]).flatten()
        sizes = sizes.unsqueeze(0).repeat(pooled.shape[0], 1).to(pooled)
        return {"crossattn": torch.cat([cond_l, cond_g], dim=2), "vector": torch.cat([pooled, sizes], dim=1)}

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond) -> torch.Tensor:
        kmodel = self.originals.unet.model
        dtype = kmodel.computation_dtype
        context, vector = (cond["crossattn"], cond["vector"]) if isinstance(cond, dict) else (cond, None)
        return kmodel.diffusion_model(
            noisy.to(dtype),
            timesteps.float(),
            context=context.to(dtype),
            y=None if vector is None else vector.to(dtype),
            transformer_options={},
        )

    def sample(
        self,
        prompts: list[str],
        seed: int,
        steps: int,
        size: tuple[int, int],
        options: list[SampleOptions] | None = None,
    ) -> list[Image.Image]:
        """Previews through Forge's own txt2img (``options``: kohya's prompt line options); training then goes on
        with the bare model again."""
        try:
            with torch.inference_mode(True):
                return preview_images(self.m, prompts, seed, steps, size, options)
        finally:
            self._ready()

    def weights_digest(self) -> str:
        """A hash of every weight, to show that training left the model unchanged."""
        parts = {
            "unet": self.originals.unet.model.diffusion_model,
            "clip": self.originals.clip.cond_stage_model,
            "vae": self.originals.vae.first_stage_model,
        }
        return weights_digest((f"{p}.{k}", v) for p, m in parts.items() for k, v in m.state_dict().items())

    def token_tables(self) -> dict[str, torch.Tensor]:
        """Each text encoder's input embedding table, for the inspector."""
        return {key: _token_layer(e).weight.detach().float().cpu() for key, e in self.engines.items()}

    def spell(self, token_id: int) -> str:
        return str(self.engines["clip_l"].tokenizer.convert_ids_to_tokens(token_id)).replace("</w>", "")
