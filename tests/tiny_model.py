"""A ModelAdapter on tiny real networks (transformers' CLIPTextModel, diffusers' UNet2DConditionModel and
AutoencoderKL), wired the way the WebUI wires its own: the token's vectors replace the token's input embeddings.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile

import torch
from PIL import Image

from lib_ti.training.model import SampleOptions, TrainOptions, default_autocast

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER_GLOB = os.path.join(
    HERE, "..", "..", "shared", "test-models", "hf", "hub", "models--openai--clip-vit-large-patch14", "snapshots", "*"
)


def tokenizer_dir() -> str:
    """The real CLIP BPE tokenizer shipped in ../shared (token ids match the WebUI's), else a character-level one."""
    found = sorted(glob.glob(TOKENIZER_GLOB))
    return os.environ.get("TI_TEST_TOKENIZER") or (found[0] if found else _character_tokenizer())


def _character_tokenizer() -> str:
    """A CLIP tokenizer with no merges: every character is a token. Enough to exercise training anywhere."""
    folder = os.path.join(tempfile.gettempdir(), "ti-trainer-char-tokenizer")
    if not os.path.isfile(os.path.join(folder, "merges.txt")):
        os.makedirs(folder, exist_ok=True)
        printable = (
            [chr(c) for c in range(33, 127)] + [chr(c) for c in range(161, 173)] + [chr(c) for c in range(174, 256)]
        )
        others = [chr(256 + i) for i in range(256 - len(printable))]  # the byte-to-unicode mapping's stand-ins
        chars = printable + others
        vocab = {
            tok: i for i, tok in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])
        }
        with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(vocab, f)
        with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
    return folder


def ids_and_fixes(tokenizer, tokenize, token_ids: list[int], num_vectors: int, prompts: list[str]):
    """Token ids with n placeholder slots where the token stands, and the offsets of the slots that fit in 77."""
    batch, fixes = [], []
    for prompt in prompts:
        ids = tokenize(prompt)
        out, positions, i = [tokenizer.bos_token_id], [], 0
        while i < len(ids):
            if token_ids and ids[i : i + len(token_ids)] == token_ids:
                positions.append(len(out))
                out += [tokenizer.eos_token_id] * num_vectors
                i += len(token_ids)
            else:
                out.append(ids[i])
                i += 1
        batch.append((out + [tokenizer.eos_token_id] * 77)[:77])
        fixes.append([p for p in positions if p + num_vectors <= 77])
    return torch.tensor(batch), fixes


class _Substitute(torch.nn.Module):
    """Replaces the placeholder positions' input embeddings with the trained vectors (like EmbeddingsWithFixes)."""

    def __init__(self, wrapped: torch.nn.Embedding, key: str):
        super().__init__()
        self.wrapped, self.key = wrapped, key
        self.fixes: list[list[int]] | None = None
        self.vectors: dict[str, torch.Tensor] | None = None

    def forward(self, input_ids):
        embeds = self.wrapped(input_ids)
        if not self.fixes or self.vectors is None:
            return embeds
        rows = []
        for positions, row in zip(self.fixes, embeds):
            for offset in positions:
                vec = self.vectors[self.key].to(row.dtype)
                row = torch.cat([row[:offset], vec, row[offset + vec.shape[0] :]])
            rows.append(row)
        return torch.stack(rows)


class TinySD:
    """SD-shaped: text encoder(s) -> cross-attention UNet on 4-channel latents at 1/8 scale."""

    def __init__(self, prediction_type: str = "eps", two_encoders: bool = False, seed: int = 0):
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

        torch.manual_seed(seed)
        self.tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir())
        widths = {"clip_l": 32, "clip_g": 48} if two_encoders else {"clip_l": 32}
        self.encoders = {}
        for key, width in widths.items():
            config = CLIPTextConfig(
                vocab_size=len(self.tokenizer),
                hidden_size=width,
                intermediate_size=2 * width,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
            )
            model = CLIPTextModel(config).eval()
            model.set_input_embeddings(_Substitute(model.get_input_embeddings(), key))
            self.encoders[key] = model
        self.unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=sum(widths.values()),
            attention_head_dim=8,
            norm_num_groups=8,
        ).eval()
        self.vae = AutoencoderKL(
            block_out_channels=(8, 8, 8, 8),
            latent_channels=4,
            norm_num_groups=4,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
        ).eval()
        self.family = "sdxl" if two_encoders else ("sd2" if prediction_type == "v" else "sd1")
        self.native_resolution = 64
        self.prediction_type = prediction_type
        self.embedding_dims = dict(widths)
        self.model_name, self.model_hash = "tiny-test", "0123456789"
        self.device = torch.device("cpu")
        self.token: str | None = None
        self.sampled: list[tuple[str, SampleOptions]] = []
        self.num_vectors = 0
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
        self._alphas = torch.cumprod(1 - betas, dim=0)

    def modules(self) -> list[torch.nn.Module]:
        return [*self.encoders.values(), self.unet, self.vae]

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def token_vectors(self, ids: list[int]) -> dict[str, torch.Tensor]:
        return {k: m.get_input_embeddings().wrapped.weight[ids].detach() for k, m in self.encoders.items()}

    def alphas_cumprod(self) -> torch.Tensor:
        return self._alphas

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.vae.encode(pixels).latent_dist.mode() * 0.18215

    def autocast(self, mixed_precision: str):
        return default_autocast(self.device, mixed_precision)

    @contextlib.contextmanager
    def training(self, token: str, vectors: dict[str, torch.Tensor], options: TrainOptions):
        saved = [(p, p.requires_grad) for m in self.modules() for p in m.parameters()]
        for p, _ in saved:
            p.requires_grad_(False)
        self.token, self.num_vectors = token, next(iter(vectors.values())).shape[0]
        for model in self.encoders.values():
            model.get_input_embeddings().vectors = vectors
        try:
            yield
        finally:
            for p, flag in saved:
                p.requires_grad_(flag)
            for model in self.encoders.values():
                model.get_input_embeddings().vectors = None
            self.token = None

    def _ids_and_fixes(self, prompts: list[str]) -> tuple[torch.Tensor, list[list[int]]]:
        token_ids = self.token_ids(self.token) if self.token else []
        return ids_and_fixes(self.tokenizer, self.token_ids, token_ids, self.num_vectors, prompts)

    def encode_text(self, prompts: list[str], size: tuple[int, int]) -> torch.Tensor:
        ids, fixes = self._ids_and_fixes(prompts)
        outputs = []
        for model in self.encoders.values():
            model.get_input_embeddings().fixes = fixes
            outputs.append(model(input_ids=ids).last_hidden_state)
            model.get_input_embeddings().fixes = None
        return torch.cat(outputs, dim=-1)

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.unet(noisy, timesteps, encoder_hidden_states=cond).sample

    def sample(
        self,
        prompts: list[str],
        seed: int,
        steps: int,
        size: tuple[int, int],
        options: list[SampleOptions] | None = None,
    ) -> list[Image.Image]:
        """A one-step 'preview': enough to test that previews are made, named and reported. Records the
        requests (``self.sampled``) so tests can check the options reached the adapter."""
        generator = torch.Generator().manual_seed(seed)
        images = []
        for i, prompt in enumerate(prompts):
            o = options[i] if options else SampleOptions()
            if o.seed is not None:
                generator = torch.Generator().manual_seed(o.seed)
            size_i = (o.height or size[0], o.width or size[1])
            self.sampled.append((prompt, o))
            latents = torch.randn(1, 4, size_i[0] // 8, size_i[1] // 8, generator=generator)
            eps = self.predict(latents, torch.tensor([999]), self.encode_text([prompt], size_i))
            if o.negative_prompt:  # classifier-free guidance against the negative prompt, as txt2img does
                neg = self.predict(latents, torch.tensor([999]), self.encode_text([o.negative_prompt], size_i))
                eps = neg + (o.cfg_scale or 7.0) * (eps - neg)
            pixels = self.vae.decode((latents - eps) / 0.18215).sample[0]
            array = ((pixels.clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).byte().numpy()
            image = Image.fromarray(array)
            image.info["parameters"] = (
                f"{prompt}\nSteps: {steps}, Seed: {seed}, Size: {size[1]}x{size[0]}"  # as the WebUI
            )
            images.append(image)
        return images

    def weights_digest(self) -> str:
        import hashlib

        h = hashlib.sha256()
        for model in self.modules():
            for name, tensor in sorted(model.state_dict().items()):
                h.update(name.encode())
                h.update(tensor.detach().contiguous().numpy().tobytes())
        return h.hexdigest()
