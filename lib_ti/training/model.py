"""The small interface the trainer needs from a model, and vector initialisation from an init word.

``lib_ti.hosts`` implements it on the WebUI's loaded model; tests implement it on tiny real networks.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import ContextManager, Protocol

import torch
from PIL import Image


@dataclass
class TrainOptions:
    """What the trainer asks of the model while it trains."""

    gradient_checkpointing: bool = False
    mixed_precision: str = "no"
    offload_vae: bool = False  # latents are cached, so the VAE can leave the GPU while training


@dataclass
class SampleOptions:
    """One preview's settings (kohya's prompt line options); None leaves the WebUI's default."""

    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None


class ModelAdapter(Protocol):
    family: str  # "sd1" | "sd2" | "sdxl"
    native_resolution: int
    prediction_type: str  # "eps" | "v"
    embedding_dims: dict[str, int]  # {"clip_l": d} or {"clip_l": d1, "clip_g": d2}
    model_name: str
    model_hash: str
    device: torch.device

    def token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` without start/end tokens (first text encoder)."""

    def token_vectors(self, ids: list[int]) -> dict[str, torch.Tensor]:
        """Each encoder's input embeddings for these ids, (len(ids), dim) per key."""

    def alphas_cumprod(self) -> torch.Tensor:
        """The model's own noise schedule, (num_timesteps,)."""

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Scaled latents for (B, 3, H, W) pixels in [-1, 1]."""

    def training(self, token: str, vectors: dict[str, torch.Tensor], options: TrainOptions) -> ContextManager[None]:
        """While inside: prompts containing ``token`` use ``vectors`` (with gradients); the model is frozen.
        On leaving, the host's embedding list is reloaded (once per job), so the saved file works in prompts."""

    def encode_text(self, prompts: list[str], size: tuple[int, int]) -> object:
        """Conditioning for the prompts, differentiable w.r.t. the vectors given to ``training``."""

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: object) -> torch.Tensor:
        """The denoiser's output (eps or v) for noisy latents."""

    def sample(
        self,
        prompts: list[str],
        seed: int,
        steps: int,
        size: tuple[int, int],
        options: list[SampleOptions] | None = None,
    ) -> list[Image.Image]:
        """Preview images with the current vectors (called inside ``training``). ``options``, one per prompt,
        override seed, steps and size and add a negative prompt and CFG scale (optional for adapters)."""

    def autocast(self, mixed_precision: str) -> ContextManager[None]:
        """Autocast for the forward pass; full precision where mixed precision does not apply."""


def sample_with_options(
    adapter: ModelAdapter, prompts: list[str], seed: int, steps: int, options: list[SampleOptions]
) -> tuple[list[Image.Image], str]:
    """Previews with per-prompt options where the adapter takes them; otherwise the run's seed, steps and the first
    size, and a note saying the options were not used."""
    size = (options[0].height or 512, options[0].width or 512) if options else (512, 512)
    if "options" in inspect.signature(adapter.sample).parameters:
        return adapter.sample(prompts, seed, steps, size, options=options), ""
    custom = any(
        o.negative_prompt or o.cfg_scale is not None or (o.seed, o.steps, (o.height, o.width)) != (seed, steps, size)
        for o in options
    )
    note = "This WebUI adapter takes no per-prompt preview options (--n, --w, --h, --d, --s, --l); they are not used."
    return adapter.sample(prompts, seed, steps, size), note if custom else ""


def default_autocast(device: torch.device, mixed_precision: str) -> ContextManager[None]:
    """Mixed precision only on CUDA; on the CPU training runs in full precision."""
    if device.type != "cuda" or mixed_precision == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def spread_init(token_rows: torch.Tensor, num_vectors: int) -> tuple[torch.Tensor, str]:
    """Initial vectors from an init word's token embeddings, and a sentence saying what was done.

    Equal counts map one to one; fewer tokens than vectors are spread over consecutive vectors (as the WebUI
    does); more tokens than vectors are averaged in consecutive groups, so no token of the word is lost.
    """
    n_tokens = token_rows.shape[0]
    if n_tokens == num_vectors:
        return token_rows.clone(), f"each of the {num_vectors} vector(s) starts from one token of the init word"
    if n_tokens < num_vectors:
        index = [i * n_tokens // num_vectors for i in range(num_vectors)]
        return token_rows[index].clone(), (
            f"the init word's {n_tokens} token(s) were spread over {num_vectors} vectors (each token repeated)"
        )
    groups = [list(range(i * n_tokens // num_vectors, (i + 1) * n_tokens // num_vectors)) for i in range(num_vectors)]
    rows = torch.stack([token_rows[g].mean(dim=0) for g in groups])
    return rows, f"the init word's {n_tokens} tokens were averaged in groups into {num_vectors} vector(s)"


def init_vectors(adapter: ModelAdapter, init_word: str, num_vectors: int) -> tuple[dict[str, torch.Tensor], str]:
    """Vectors for every text encoder of the model, from ``init_word``; the note says how."""
    ids = adapter.token_ids(init_word)
    if not ids:
        from lib_ti.errors import UserError

        raise UserError(
            f"init_word {init_word!r} tokenises to nothing; use a word close to your concept, e.g. 'painting'."
        )
    rows = adapter.token_vectors(ids)
    vectors: dict[str, torch.Tensor] = {}
    note = ""
    for key, table in rows.items():
        vectors[key], note = spread_init(table.detach().float().cpu(), num_vectors)
    return vectors, f"init_word {init_word!r} = {len(ids)} token(s); {note}."
