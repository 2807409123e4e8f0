"""TI Trainer on a GPU without the WebUI: SD1.5- and SDXL-size networks (diffusers + transformers, random weights)
behind a ``ModelAdapter``, trained by lib_ti's own ``train()`` (data, latent cache, loop, optimizer, read-back).

    python tests/bench/gpu_bench.py [--budget 480] [--only sd15] [--tiny]

For each configuration: samples/s over timed steps after warm-up (torch.cuda.synchronize at both ends), the peak
memory of the timed steps, the FLOPs of one step counted with FlopCounterMode (at batch 1, times the batch: every
op scales with it), the TFLOP/s that gives and its fraction of a stated bf16 peak (--peak, default 989e12: H100 /
H200 SXM dense) and of an 8192^3 bf16 matmul timed in the same run. Largest batch: doubling, then bisection, each
try two training steps, an out-of-memory error meaning "does not fit".

"built-in" emulates the WebUI's own Textual Inversion trainer: the UNet's weights stay trainable (autograd computes
their gradients, which pile up in .grad as in the WebUI, whose optimizer holds the embedding only), gradient
checkpointing on, fp16 autocast with a grad scaler, the loss read back every step; attention is PyTorch's SDPA
(the variant "naive attn" uses diffusers' plain attention, as the WebUI's default "no optimizations while training"
does). Same data path, loss and optimizer as ours, so the ratios isolate those differences.

Weights are kept in the autocast dtype (the WebUI's half model; bf16 runs convert them to bf16). The tokenizer is
a character-level CLIP tokenizer (no vocabulary files needed); embedding tables keep CLIP's 49408 rows and prompts
are padded to 77 tokens either way, so the cost is that of the real model.

--tiny runs every configuration with tiny networks on the CPU (fp32: lib_ti trains in full precision there) to
check the script itself. Prints a markdown table and ratio lines; writes $OUT/gpu_bench.json when OUT is set.
Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # less fragmentation after OOM tries

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from lib_ti.training import readback as readback_module  # noqa: E402
from lib_ti.training.config import parse_config  # noqa: E402
from lib_ti.training.model import TrainOptions, default_autocast, init_vectors  # noqa: E402
from lib_ti.training.trainer import Services, diffusion_loss, train  # noqa: E402
from tests.tiny_model import _Substitute, ids_and_fixes  # noqa: E402  (the same placeholder splice as the unit tests' model)

CLIP_VOCAB = 49408
CLIP_L = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    hidden_act="quick_gelu",
    projection_dim=768,
)
CLIP_BIGG = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    hidden_act="gelu",
    projection_dim=1280,
)
VAE_SD = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
)
UNET_SD15 = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)
UNET_SDXL = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
)
FULL = {
    "sd15": dict(resolution=512, unet=UNET_SD15, encoders={"clip_l": CLIP_L}, vae=VAE_SD, scale=0.18215, cap=64),
    "sdxl": dict(
        resolution=1024,
        unet=UNET_SDXL,
        encoders={"clip_l": CLIP_L, "clip_g": CLIP_BIGG},
        vae=VAE_SD,
        scale=0.13025,
        cap=32,
    ),
}
_TINY_CLIP = dict(intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
_TINY_VAE = dict(VAE_SD, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4)
TINY = {
    "sd15": dict(
        resolution=64,
        unet=dict(
            UNET_SD15,
            sample_size=8,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            norm_num_groups=8,
        ),
        encoders={"clip_l": dict(_TINY_CLIP, hidden_size=32, hidden_act="quick_gelu", projection_dim=32)},
        vae=_TINY_VAE,
        scale=0.18215,
        cap=2,
    ),
    "sdxl": dict(
        resolution=64,
        unet=dict(
            UNET_SDXL,
            sample_size=8,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2),
            attention_head_dim=(2, 4),
            cross_attention_dim=80,
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=48 + 6 * 8,
            norm_num_groups=8,
        ),
        encoders={
            "clip_l": dict(_TINY_CLIP, hidden_size=32, hidden_act="quick_gelu", projection_dim=32),
            "clip_g": dict(_TINY_CLIP, hidden_size=48, hidden_act="gelu", projection_dim=48),
        },
        vae=_TINY_VAE,
        scale=0.13025,
        cap=2,
    ),
}


def log(*parts) -> None:
    print(*parts, flush=True)


# ---------------------------------------------------------------------------------------------------- the model


def char_tokenizer_dir() -> str:
    """A CLIP tokenizer with no merges: every character is a token (ids < 514; sequences padded to 77)."""
    folder = os.path.join(tempfile.gettempdir(), "ti-trainer-char-tokenizer")
    if not os.path.isfile(os.path.join(folder, "merges.txt")):
        os.makedirs(folder, exist_ok=True)
        printable = (
            [chr(c) for c in range(33, 127)] + [chr(c) for c in range(161, 173)] + [chr(c) for c in range(174, 256)]
        )
        chars = printable + [chr(256 + i) for i in range(256 - len(printable))]
        vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
        with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(vocab, f)
        with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
    return folder


class Timer:
    """Times the steps of one train() call from inside it: the clock starts (after a sync) when step warm+1 begins
    and stops (after a sync) at the loop's should_stop check once enough steps and time have passed."""

    def __init__(self, device, warm: int, seconds: float, min_steps: int, max_steps: int, deadline: float):
        self.device, self.warm, self.seconds = device, warm, seconds
        self.min_steps, self.max_steps, self.deadline = min_steps, max_steps, deadline
        self.calls, self.t0, self.t1, self.steps, self.peak = 0, None, None, 0, 0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def step_started(self) -> None:
        if self.calls == self.warm:
            self._sync()
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            self.t0 = time.perf_counter()
        self.calls += 1

    def should_stop(self) -> bool:
        now = time.perf_counter()
        if self.t0 is None:
            return now > self.deadline
        done = self.calls - self.warm
        if done >= self.max_steps or (done >= self.min_steps and now - self.t0 >= self.seconds) or now > self.deadline:
            self._sync()
            self.t1, self.steps = time.perf_counter(), done
            if self.device.type == "cuda":
                self.peak = torch.cuda.max_memory_allocated()
            return True
        return False


class BenchSD:
    """``ModelAdapter`` on SD1.5- or SDXL-shaped diffusers/transformers networks with random weights."""

    def __init__(self, family: str, spec: dict, device: torch.device):
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        torch.manual_seed(0)
        self.tokenizer = CLIPTokenizer.from_pretrained(char_tokenizer_dir())
        vocab = CLIP_VOCAB if device.type == "cuda" else len(self.tokenizer)
        self.encoders = {}
        with torch.device(device):
            for key, size in spec["encoders"].items():
                config = CLIPTextConfig(
                    vocab_size=vocab,
                    max_position_embeddings=77,
                    bos_token_id=self.tokenizer.bos_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                    pad_token_id=self.tokenizer.eos_token_id,
                    **size,
                )
                model = (CLIPTextModelWithProjection if key == "clip_g" else CLIPTextModel)(config).eval()
                model.set_input_embeddings(_Substitute(model.get_input_embeddings(), key))
                self.encoders[key] = model
            self.unet = UNet2DConditionModel(**spec["unet"]).eval()
            self.vae = AutoencoderKL(**spec["vae"], scaling_factor=spec["scale"]).eval()
        for module in self.modules():
            module.requires_grad_(False)
        if device.type == "cuda":
            self.vae.to(torch.bfloat16)  # only encodes the few dataset images, before the timed steps
        self.family = family
        self.native_resolution = spec["resolution"]
        self.prediction_type = "eps"
        self.embedding_dims = {k: m.config.hidden_size for k, m in self.encoders.items()}
        self.model_name, self.model_hash = f"bench-{family}", "0000000000"
        self.device, self.dtype, self.scale = device, torch.float32, spec["scale"]
        self.token: str | None = None
        self.num_vectors = 0
        # what training() does: set by the bench per configuration
        self.builtin = self.naive_attention = self.channels_last = False
        self.timer: Timer | None = None
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
        self._alphas = torch.cumprod(1 - betas, dim=0)

    def modules(self) -> list[torch.nn.Module]:
        return [*self.encoders.values(), self.unet, self.vae]

    def parameter_count(self) -> dict[str, int]:
        counts = {k: sum(p.numel() for p in m.parameters()) for k, m in self.encoders.items()}
        counts["unet"] = sum(p.numel() for p in self.unet.parameters())
        counts["vae"] = sum(p.numel() for p in self.vae.parameters())
        return counts

    def set_dtype(self, dtype: torch.dtype) -> None:
        """The weights in the autocast dtype, as the WebUI keeps its model in half precision."""
        if self.device.type != "cuda" or dtype == self.dtype:
            return
        for module in [*self.encoders.values(), self.unet]:
            module.to(dtype)
        self.dtype = dtype

    # --- ModelAdapter
    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def token_vectors(self, ids: list[int]) -> dict[str, torch.Tensor]:
        return {k: m.get_input_embeddings().wrapped.weight[ids].detach().float() for k, m in self.encoders.items()}

    def alphas_cumprod(self) -> torch.Tensor:
        return self._alphas

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        vae_dtype = next(self.vae.parameters()).dtype
        with torch.no_grad():
            return self.vae.encode(pixels.to(vae_dtype)).latent_dist.mode().float() * self.scale

    def autocast(self, mixed_precision: str):
        return default_autocast(self.device, mixed_precision)

    @contextlib.contextmanager
    def training(self, token: str, vectors: dict[str, torch.Tensor], options: TrainOptions):
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        self.token, self.num_vectors = token, next(iter(vectors.values())).shape[0]
        for model in self.encoders.values():
            model.get_input_embeddings().vectors = vectors
        if options.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        if self.builtin:
            self.unet.requires_grad_(True)  # the WebUI's trainer leaves the UNet trainable
        if self.naive_attention:
            self.unet.set_attn_processor(AttnProcessor())
        if self.channels_last:  # NHWC convolutions: whether they beat the WebUI's NCHW layout is what is measured
            self.unet.to(memory_format=torch.channels_last)
        try:
            yield
        finally:
            self.unet.requires_grad_(False)
            for p in self.unet.parameters():
                p.grad = None
            if options.gradient_checkpointing:
                self.unet.disable_gradient_checkpointing()
            if self.naive_attention:
                self.unet.set_attn_processor(AttnProcessor2_0())
            if self.channels_last:
                self.unet.to(memory_format=torch.contiguous_format)
            for model in self.encoders.values():
                model.get_input_embeddings().vectors = None
            self.token = None

    def _ids_and_fixes(self, prompts: list[str]) -> tuple[torch.Tensor, list[list[int]]]:
        token_ids = self.token_ids(self.token) if self.token else []
        ids, fixes = ids_and_fixes(self.tokenizer, self.token_ids, token_ids, self.num_vectors, prompts)
        return self._to_device(ids), fixes

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """Host data to the GPU without a sync (a plain .to(cuda) of pageable memory waits for the GPU's queue)."""
        if self.device.type != "cuda":
            return tensor
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def encode_text(self, prompts: list[str], size: tuple[int, int]) -> dict[str, torch.Tensor]:
        if self.timer:
            self.timer.step_started()
        ids, fixes = self._ids_and_fixes(prompts)
        hidden, pooled = [], None
        for key, model in self.encoders.items():
            model.get_input_embeddings().fixes = fixes
            out = model(input_ids=ids, output_hidden_states=self.family == "sdxl")
            model.get_input_embeddings().fixes = None
            if self.family == "sdxl":  # the penultimate layer of both, the pooled projection of clip_g
                hidden.append(out.hidden_states[-2])
                if key == "clip_g":
                    pooled = out.text_embeds
            else:
                hidden.append(out.last_hidden_state)
        cond = {"context": torch.cat(hidden, dim=-1)}
        if self.family == "sdxl":
            h, w = size
            cond["text_embeds"] = pooled
            cond["time_ids"] = self._to_device(torch.tensor([[h, w, 0, 0, h, w]] * len(prompts), dtype=torch.float32))
        return cond

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        extra = {}
        if "text_embeds" in cond:
            extra["added_cond_kwargs"] = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}
        noisy = noisy.to(self.dtype, memory_format=torch.channels_last if self.channels_last else torch.preserve_format)
        return self.unet(noisy, timesteps, encoder_hidden_states=cond["context"], **extra).sample

    def sample(self, prompts, seed, steps, size):
        return []  # previews are off in the benchmark


# --------------------------------------------------------------------------------------------------- measuring


class Bench:
    def __init__(self, args):
        self.args = args
        self.tiny = args.tiny
        self.device = torch.device("cpu" if args.tiny else "cuda")
        self.specs = TINY if args.tiny else FULL
        self.start = time.perf_counter()
        self.deadline = self.start + args.budget
        self.model: BenchSD | None = None
        self.work = tempfile.mkdtemp(prefix="ti-gpu-bench-")
        self.data: dict[int, str] = {}
        self.flops: dict[tuple, float] = {}
        self.batches: dict[str, int] = {}
        self.results: list[dict] = []
        self.info: dict = {}
        self.warm = 1 if args.tiny else 3
        self.seconds = 0.2 if args.tiny else 4.0
        self.min_steps = 2 if args.tiny else 3

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def get_model(self, family: str) -> BenchSD:
        if self.model is not None and self.model.family == family:
            return self.model
        self.model = None
        self._free()
        t = time.perf_counter()
        self.model = BenchSD(family, self.specs[family], self.device)
        self._sync()
        counts = self.model.parameter_count()
        log(
            f"built {family} in {time.perf_counter() - t:.1f} s: "
            + ", ".join(f"{k} {v / 1e6:.0f}M" for k, v in counts.items())
        )
        self.info.setdefault("parameters", {})[family] = counts
        return self.model

    def dataset(self, resolution: int) -> str:
        """Four random images with captions; batches larger than the dataset repeat images (as the sampler does)."""
        if resolution not in self.data:
            folder = os.path.join(self.work, f"data-{resolution}")
            os.makedirs(folder)
            for i in range(4):
                Image.effect_noise((resolution, resolution), 40 + 10 * i).convert("RGB").save(
                    os.path.join(folder, f"{i}.jpg"), quality=90
                )
                with open(os.path.join(folder, f"{i}.txt"), "w", encoding="utf-8") as f:
                    f.write("benchtok")
            self.data[resolution] = folder
        return self.data[resolution]

    def train_once(self, cfg: dict, batch: int, timer: Timer) -> tuple[object, list[str]]:
        """One lib_ti train() run with this configuration, stopped by the timer."""
        model = self.get_model(cfg["family"])
        model.set_dtype(torch.float16 if cfg["precision"] == "fp16" else torch.bfloat16)
        model.builtin, model.naive_attention = cfg["builtin"], cfg.get("naive", False)
        model.channels_last = cfg.get("channels_last", False)
        resolution = self.specs[cfg["family"]]["resolution"]
        values = dict(
            train_data_dir=self.dataset(resolution),
            token_string="benchtok",
            init_word="painting",
            num_vectors_per_token=2,
            max_train_steps=100000,
            save_every_n_steps=0,
            learning_rate="0.005",
            seed=1,
            resolution=resolution,
            train_batch_size=batch,
            mixed_precision=cfg["precision"],
            gradient_checkpointing=cfg["ckpt"],
            use_8bit_adam=cfg.get("adam8", False),
        )
        parsed = parse_config(values)
        out = tempfile.mkdtemp(dir=self.work)
        messages: list[str] = []
        every = readback_module.READBACK_EVERY.get("cuda")
        if cfg.get("sync_each_step") or cfg["builtin"]:
            readback_module.READBACK_EVERY["cuda"] = 1
        model.timer = timer
        benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = bool(cfg.get("cudnn_benchmark")) or benchmark
        try:
            result = train(
                parsed.config,
                model,
                os.path.join(out, "emb"),
                os.path.join(out, "runs"),
                Services(should_stop=timer.should_stop, message=messages.append),
            )
        finally:
            model.timer = None
            torch.backends.cudnn.benchmark = benchmark
            if every is not None:
                readback_module.READBACK_EVERY["cuda"] = every
            shutil.rmtree(out, ignore_errors=True)
        return result, messages

    def fits(self, cfg: dict, batch: int) -> bool:
        if time.perf_counter() > self.deadline:
            raise TimeoutError("budget spent during the batch search")
        timer = Timer(self.device, 0, 0.0, 2, 2, self.deadline)
        try:
            self.train_once(cfg, batch, timer)
            ok = True
        except Exception as e:  # noqa: BLE001 - an OOM only, anything else is re-raised below
            text = f"{type(e).__name__}: {e}"
            if not _is_oom(e):
                raise
            ok = False
            del e
            log(f"    batch {batch}: out of memory ({text.splitlines()[0][:100]})")
        self._free()
        if ok:
            log(f"    batch {batch}: fits")
        return ok

    def largest_batch(self, cfg: dict) -> int:
        cap = self.specs[cfg["family"]]["cap"]
        key = cfg.get("batch_key")
        if key and key in self.batches:
            return self.batches[key]
        lo, hi, b = 0, None, 1
        while True:
            if self.fits(cfg, b):
                lo = b
                if b >= cap:
                    break
                b = min(b * 2, cap)
            else:
                hi = b
                break
        while hi is not None and hi - lo > max(1, lo // 8):
            mid = (lo + hi) // 2
            if self.fits(cfg, mid):
                lo = mid
            else:
                hi = mid
        if lo == 0:
            raise RuntimeError("batch 1 does not fit")
        if key:
            self.batches[key] = lo
        return lo

    def count_flops(self, cfg: dict) -> float:
        """FLOPs of one training step at batch 1 (forward, backward; recomputation when checkpointing)."""
        from torch.utils.flop_counter import FlopCounterMode

        key = (cfg["family"], cfg["builtin"], cfg["ckpt"], cfg.get("naive", False))
        if key in self.flops:
            return self.flops[key]
        model = self.get_model(cfg["family"])
        model.set_dtype(torch.float16 if cfg["precision"] == "fp16" else torch.bfloat16)
        model.builtin, model.naive_attention = cfg["builtin"], cfg.get("naive", False)
        vectors, _ = init_vectors(model, "painting", 2)
        leaves = {k: v.to(self.device).requires_grad_(True) for k, v in vectors.items()}
        res = self.specs[cfg["family"]]["resolution"]
        alphas = model.alphas_cumprod().to(self.device)
        latents = torch.randn(1, 4, res // 8, res // 8, device=self.device)
        noise, t = torch.randn_like(latents), torch.tensor([500], device=self.device)
        with model.training("benchtok", leaves, TrainOptions(cfg["ckpt"], cfg["precision"])):
            counter = FlopCounterMode(display=False)
            with counter:
                with model.autocast(cfg["precision"]):
                    loss = diffusion_loss(model, alphas, latents, ["a painting of benchtok"], noise, t)
                loss.backward()
            flops = float(counter.get_total_flops())
        del loss, leaves
        self._free()
        self.flops[key] = flops
        return flops

    def syncs_per_step(self, cfg: dict) -> tuple[float, list[str]]:
        """Host syncs per training step at batch 1, from CUDA's sync debug mode: (syncs in a 40-step run - in a
        20-step run) / 20, so setup and saving cancel out; and the Python lines they came from."""
        import collections
        import warnings

        counts, sites = [], collections.Counter()
        for steps in (20, 40):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    self.train_once(cfg, 1, Timer(self.device, 0, 1e9, steps, steps, self.deadline))
                finally:
                    torch.cuda.set_sync_debug_mode(0)
            found = [w for w in caught if "synchroniz" in str(w.message)]
            counts.append(len(found))
            sites = collections.Counter(f"{os.path.basename(w.filename)}:{w.lineno}" for w in found)
        return (counts[1] - counts[0]) / 20, [f"{site} x{n}" for site, n in sites.most_common(8)]

    def run_config(self, cfg: dict) -> dict:
        row = {k: v for k, v in cfg.items() if k not in ("need",)}
        try:
            flops1 = self.count_flops(cfg)
        except Exception as e:  # noqa: BLE001 - speed is still worth having
            flops1, row["flops_error"] = None, f"{type(e).__name__}: {str(e)[:200]}"
            log(f"  counting FLOPs failed: {row['flops_error']}")
            self._free()
        cached = cfg.get("batch_key") in self.batches
        batch = 1 if cfg["batch"] == 1 else self.largest_batch(cfg)
        if cfg["batch"] != 1 and cached:
            row["batch_note"] = f"largest batch found for {cfg['batch_key']} (same memory)"
        for attempt in range(2):
            warm = self.warm if batch == 1 else max(1, self.warm - 1)  # the batch search has warmed up already
            timer = Timer(self.device, warm, self.seconds, self.min_steps, 200, self.deadline)
            try:
                result, messages = self.train_once(cfg, batch, timer)
                break
            except Exception as e:  # noqa: BLE001
                if attempt or not _is_oom(e) or batch == 1:
                    raise
                del e
                self._free()
                batch = max(1, batch * 7 // 8)
                log(f"    out of memory in the timed run; again at batch {batch}")
        if timer.t1 is None or timer.steps == 0:
            raise TimeoutError("budget spent before the timed steps")
        seconds = timer.t1 - timer.t0
        losses = [v for _, v in result.losses]
        optim = "AdamW"
        if cfg.get("adam8"):
            optim = "AdamW8bit" if any("Using 8-bit AdamW" in m for m in messages) else "AdamW (8-bit unavailable)"
            row["optim_note"] = next((m for m in messages if "8-bit" in m), "")
        tflops = flops1 * batch * timer.steps / seconds / 1e12 if flops1 else None
        mm = self.info.get("matmul_tflops")
        row.update(
            batch=batch,
            optim=optim,
            steps=timer.steps,
            seconds=seconds,
            s_per_step=seconds / timer.steps,
            samples_per_s=batch * timer.steps / seconds,
            peak_gib=timer.peak / 2**30 if self.device.type == "cuda" else None,
            gflop_per_sample=flops1 / 1e9 if flops1 else None,
            tflops=tflops,
            frac_peak=tflops * 1e12 / self.args.peak if tflops else None,
            frac_matmul=tflops / mm if tflops and mm else None,
            state=result.state,
            losses_finite=bool(losses) and all(math.isfinite(v) for v in losses),
            last_loss=losses[-1] if losses else None,
            trained_steps=result.step,
        )
        row["ok"] = result.state == "interrupted" and row["losses_finite"]
        if cfg.get("count_syncs") and self.device.type == "cuda":
            try:
                row["syncs_per_step"], row["sync_sites"] = self.syncs_per_step(cfg)
                log(f"  host syncs per step: {row['syncs_per_step']:.2f} (40-step run: {', '.join(row['sync_sites'])})")
            except Exception as e:  # noqa: BLE001 - a diagnostic only
                log(f"  counting host syncs failed: {type(e).__name__}: {e}")
        return row


def _is_oom(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in text or "alloc_failed" in text


def matmul_tflops(device: torch.device, tiny: bool) -> float:
    n, dtype = (1024, torch.float32) if tiny else (8192, torch.bfloat16)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    reps = 3 if tiny else 20
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def configurations() -> list[dict]:
    """Most important first: a budget that runs out drops the tail."""

    def c(id, family, builtin=False, precision="bf16", ckpt=False, batch="max", **extra):
        kind = "builtin" if builtin else "ours"
        key = extra.pop(
            "batch_key", f"{family}-{kind}-{'ckpt' if ckpt else 'nockpt'}-{'naive' if extra.get('naive') else 'sdpa'}"
        )
        return dict(
            id=id, family=family, builtin=builtin, precision=precision, ckpt=ckpt, batch=batch, batch_key=key, **extra
        )

    return [
        c("sd15-ours-bf16-b1", "sd15", batch=1, count_syncs=True),
        c("sd15-ours-bf16-max", "sd15"),
        c("sd15-builtin-max", "sd15", builtin=True, precision="fp16", ckpt=True),
        c("sd15-builtin-b1", "sd15", builtin=True, precision="fp16", ckpt=True, batch=1),
        c("sdxl-ours-bf16-b1", "sdxl", batch=1),
        c("sdxl-ours-bf16-max", "sdxl"),
        c("sdxl-builtin-max", "sdxl", builtin=True, precision="fp16", ckpt=True),
        c("sdxl-builtin-b1", "sdxl", builtin=True, precision="fp16", ckpt=True, batch=1),
        c("sd15-ours-fp16-b1", "sd15", precision="fp16", batch=1),
        c("sd15-ours-fp16-max", "sd15", precision="fp16"),
        c("sd15-ours-bf16-ckpt-max", "sd15", ckpt=True),
        c("sd15-ours-bf16-adam8-max", "sd15", adam8=True),
        c("sd15-ours-bf16-b1-sync-each-step", "sd15", batch=1, sync_each_step=True, count_syncs=True),
        c("sd15-builtin-naive-attn-max", "sd15", builtin=True, precision="fp16", ckpt=True, naive=True),
        c("sdxl-ours-fp16-b1", "sdxl", precision="fp16", batch=1),
        c("sdxl-ours-fp16-max", "sdxl", precision="fp16"),
        c("sdxl-ours-bf16-ckpt-max", "sdxl", ckpt=True),
        c("sdxl-ours-bf16-adam8-max", "sdxl", adam8=True),
        c("sdxl-ours-bf16-b1-sync-each-step", "sdxl", batch=1, sync_each_step=True),
        c("sdxl-builtin-naive-attn-max", "sdxl", builtin=True, precision="fp16", ckpt=True, naive=True),
        c("sd15-ours-bf16-max-cudnn-benchmark", "sd15", cudnn_benchmark=True),
        c("sdxl-ours-bf16-max-cudnn-benchmark", "sdxl", cudnn_benchmark=True),
        c("sd15-ours-bf16-max-channels-last", "sd15", channels_last=True),
        c("sdxl-ours-bf16-max-channels-last", "sdxl", channels_last=True),
    ]


NEED_S = {"sd15": 20.0, "sdxl": 35.0}  # skip a configuration when less time than this is left


def _pct(value):
    return None if value is None else 100 * value


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    head = (
        "| config | trainer | prec | ckpt | optim | batch | samples/s | s/step | peak GiB | GFLOP/sample | "
        "TFLOP/s | % of peak | % of matmul | loss finite |"
    )
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['id']} | {r['error'][:90]} |" + " |" * 12)
            continue
        lines.append(
            f"| {r['id']} | {'built-in' + (' (naive attn)' if r.get('naive') else '') if r['builtin'] else 'ours'} "
            f"| {r['precision']}{'+scaler' if r['precision'] == 'fp16' else ''} | {'on' if r['ckpt'] else 'off'} "
            f"| {r['optim']} | {r['batch']} | {r['samples_per_s']:.2f} | {r['s_per_step']:.4f} "
            f"| {_fmt(r['peak_gib'], '.1f')} | {_fmt(r['gflop_per_sample'], '.4g')} | {_fmt(r['tflops'], '.4g')} "
            f"| {_fmt(_pct(r['frac_peak']), '.1f')} | {_fmt(_pct(r['frac_matmul']), '.1f')} "
            f"| {'yes' if r['losses_finite'] else 'NO'} ({r['state']}, last {_fmt(r['last_loss'], '.4f')}) |"
        )
    return "\n".join(lines)


def ratios(rows: list[dict]) -> list[str]:
    got = {r["id"]: r for r in rows if "error" not in r}
    out = []

    def ratio(a: str, b: str, what: str) -> None:
        if a in got and b in got:
            x, y = got[a], got[b]
            value = x["samples_per_s"] / y["samples_per_s"]
            out.append(
                f"{what}: {value:.2f}x  ({a} {x['samples_per_s']:.2f} samples/s at batch {x['batch']} / "
                f"{b} {y['samples_per_s']:.2f} at batch {y['batch']})"
            )

    for fam in ("sd15", "sdxl"):
        ratio(f"{fam}-ours-bf16-max", f"{fam}-builtin-max", f"{fam} ours bf16 largest / built-in largest")
        ratio(f"{fam}-ours-fp16-max", f"{fam}-builtin-max", f"{fam} ours fp16 largest / built-in largest")
        ratio(f"{fam}-ours-bf16-b1", f"{fam}-builtin-b1", f"{fam} ours bf16 batch 1 / built-in batch 1")
        ratio(
            f"{fam}-ours-bf16-ckpt-max",
            f"{fam}-builtin-max",
            f"{fam} ours bf16 + checkpointing largest / built-in largest",
        )
        ours = [r for r in got.values() if r["family"] == fam and not r["builtin"]]
        if ours and f"{fam}-builtin-max" in got:
            ratio(
                max(ours, key=lambda r: r["samples_per_s"])["id"],
                f"{fam}-builtin-max",
                f"{fam} ours best / built-in largest",
            )
        ratio(
            f"{fam}-ours-bf16-max",
            f"{fam}-builtin-naive-attn-max",
            f"{fam} ours bf16 largest / built-in (naive attention) largest",
        )
        ratio(
            f"{fam}-ours-bf16-b1",
            f"{fam}-ours-bf16-b1-sync-each-step",
            f"{fam} batch 1: losses read back in batches / every step",
        )
        ratio(f"{fam}-ours-bf16-ckpt-max", f"{fam}-ours-bf16-max", f"{fam} ours largest: checkpointing on / off")
        ratio(f"{fam}-ours-bf16-adam8-max", f"{fam}-ours-bf16-max", f"{fam} ours largest: 8-bit AdamW / AdamW")
        ratio(
            f"{fam}-ours-bf16-max-cudnn-benchmark",
            f"{fam}-ours-bf16-max",
            f"{fam} ours largest: cudnn.benchmark on / off",
        )
        ratio(f"{fam}-ours-bf16-max-channels-last", f"{fam}-ours-bf16-max", f"{fam} ours largest: channels-last / NCHW")
        best = got.get(f"{fam}-ours-bf16-max")
        if best and best["frac_peak"] is not None:
            out.append(
                f"{fam} ours bf16 largest batch ({best['batch']}) reaches {100 * best['frac_peak']:.1f}% of the stated "
                f"bf16 peak (target >= 40% on H100/H200), {_fmt(_pct(best['frac_matmul']), '.1f')}% of the measured "
                f"matmul rate"
            )
    for r in rows:
        if r.get("syncs_per_step") is not None:
            out.append(f"{r['id']}: {r['syncs_per_step']:.2f} host syncs per step ({', '.join(r['sync_sites'])})")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=480, help="seconds; later configurations are skipped")
    parser.add_argument("--tiny", action="store_true", help="tiny networks on the CPU, to test the script")
    parser.add_argument("--peak", type=float, default=989e12, help="the GPU's dense bf16 FLOP/s")
    parser.add_argument("--only", default="", help="run only configurations whose id contains this")
    args = parser.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        log("No CUDA GPU here; use --tiny to check the script on the CPU.")
        return 2
    if args.tiny:
        torch.set_num_threads(1)  # tiny ops: more threads only spin on a busy machine
    bench = Bench(args)
    import diffusers
    import transformers

    info = bench.info
    info.update(
        torch=torch.__version__,
        diffusers=diffusers.__version__,
        transformers=transformers.__version__,
        python=sys.version.split()[0],
        device=torch.cuda.get_device_name() if bench.device.type == "cuda" else "cpu (--tiny)",
        peak_stated_tflops=args.peak / 1e12,
        readback_every=readback_module.READBACK_EVERY.get("cuda"),
    )
    if bench.device.type == "cuda":
        info["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
    try:
        import bitsandbytes

        info["bitsandbytes"] = bitsandbytes.__version__
    except Exception as e:  # noqa: BLE001
        info["bitsandbytes"] = f"unavailable ({type(e).__name__}: {str(e)[:120]})"
    info["matmul_tflops"] = matmul_tflops(bench.device, args.tiny)
    log("## TI Trainer GPU benchmark" + (" (--tiny: CPU, tiny networks, fp32)" if args.tiny else ""))
    for k, v in info.items():
        log(f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}")
    log(f"- matmul measured: {'1024^3 fp32' if args.tiny else '8192^3 bf16'}; budget {args.budget:.0f} s")

    rows: list[dict] = []
    skipped: list[str] = []
    for cfg in configurations():
        if args.only and args.only not in cfg["id"]:
            continue
        need = 0.0 if args.tiny else NEED_S[cfg["family"]]
        if bench.left() < need:
            skipped.append(cfg["id"])
            log(f"skipped {cfg['id']}: {bench.left():.0f} s left of the budget")
            continue
        log(f"\n### {cfg['id']}  ({time.perf_counter() - bench.start:.0f} s in)")
        try:
            row = bench.run_config(cfg)
            log(
                f"  batch {row['batch']}: {row['samples_per_s']:.2f} samples/s, {row['s_per_step']:.4f} s/step over "
                f"{row['steps']} steps, peak {_fmt(row['peak_gib'], '.1f')} GiB, "
                f"{_fmt(row['gflop_per_sample'], '.4g')} GFLOP/sample, {_fmt(row['tflops'], '.4g')} TFLOP/s "
                f"({_fmt(_pct(row['frac_peak']), '.1f')}% of peak), losses finite: {row['losses_finite']} "
                f"({row['state']}){'; ' + row['batch_note'] if row.get('batch_note') else ''}"
            )
        except Exception as e:  # noqa: BLE001 - one failure must not lose the rest
            row = {k: v for k, v in cfg.items()}
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            log(f"  FAILED: {row['error']}")
            traceback.print_exc(limit=6)
            del e
            bench._free()
        rows.append(row)
        _write_json(info, rows, skipped)

    log("\n## Results\n")
    log(table(rows))
    log("")
    for line in ratios(rows):
        log("- " + line)
    bad = [r["id"] for r in rows if "error" not in r and not r["ok"]]
    log(f"- non-finite loss or failed run in: {', '.join(bad) if bad else 'none'}")
    failed = [r["id"] for r in rows if "error" in r]
    if failed:
        log(f"- errors in: {', '.join(failed)}")
    if skipped:
        log(f"- skipped for the budget: {', '.join(skipped)}")
    log(f"- total {time.perf_counter() - bench.start:.0f} s")
    _write_json(info, rows, skipped)
    shutil.rmtree(bench.work, ignore_errors=True)
    return 0


def _write_json(info: dict, rows: list[dict], skipped: list[str]) -> None:
    out = os.environ.get("OUT")
    if not out:
        return
    try:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "gpu_bench.json"), "w", encoding="utf-8") as f:
            json.dump({"info": info, "rows": rows, "skipped": skipped}, f, indent=1, default=str)
    except OSError as e:
        log(f"could not write {out}/gpu_bench.json: {e}")


if __name__ == "__main__":
    sys.exit(main())
