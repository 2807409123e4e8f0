"""FLOPs of one training step of SD1.5 at a given size, counted rather than guessed, and this machine's fp32 matmul
peak, so the benchmark can say how close a step comes to what the CPU can do.

The networks are built on the meta device (no memory, no weights) from the WebUI's own ldm code and the CLIP-L text
config, and run under ``torch.utils.flop_counter.FlopCounterMode``:
- TI Trainer: text encoder and UNet forward, then the backward to the token vectors only (input gradients; no
  weight is trainable);
- the built-in trainer: the same forward, the forward again inside the checkpointed blocks, and a backward that also
  computes every UNet and text-encoder weight gradient (the WebUI leaves them trainable).
Needs the WebUI's venv (torch, transformers) and its ``repositories/stable-diffusion-stability-ai``.
"""

from __future__ import annotations

import os
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

UNET = dict(
    image_size=32,
    in_channels=4,
    out_channels=4,
    model_channels=320,
    attention_resolutions=[4, 2, 1],
    num_res_blocks=2,
    channel_mult=[1, 2, 4, 4],
    num_heads=8,
    use_spatial_transformer=True,
    transformer_depth=1,
    context_dim=768,
    use_checkpoint=False,
    legacy=False,
)


def _networks(webui_dir: str):
    sys.path.insert(0, os.path.join(webui_dir, "repositories", "stable-diffusion-stability-ai"))
    from ldm.modules.diffusionmodules.openaimodel import UNetModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text_config = CLIPTextConfig(
        hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, hidden_act="quick_gelu"
    )
    with torch.device("meta"):
        return UNetModel(**UNET), CLIPTextModel(text_config)


def _twice(self, *args, **kwargs):
    """A checkpointed block's cost without torch's checkpoint (which cannot run on meta): its forward once more."""
    with torch.no_grad():
        self._forward(*args, **kwargs)
    return self._forward(*args, **kwargs)


def _count(unet, text, size: int, weights: bool, recompute: bool) -> int:
    for p in list(unet.parameters()) + list(text.parameters()):
        p.requires_grad_(weights)
    embeds = torch.randn(1, 77, 768, device="meta", requires_grad=True)
    ids = torch.zeros(1, 77, dtype=torch.long, device="meta")
    latents = torch.randn(1, 4, size // 8, size // 8, device="meta")
    t = torch.zeros(1, dtype=torch.long, device="meta")
    patched = []
    if recompute:  # what the built-in's checkpointing costs: each ResBlock / transformer block's forward twice
        from ldm.modules.attention import BasicTransformerBlock
        from ldm.modules.diffusionmodules.openaimodel import ResBlock

        for cls in (BasicTransformerBlock, ResBlock):
            patched.append((cls, cls.forward))
            cls.forward = _twice
    try:
        with FlopCounterMode(display=False) as counter:
            hidden = text.text_model.encoder(inputs_embeds=embeds + text.text_model.embeddings(input_ids=ids))
            context = text.text_model.final_layer_norm(hidden[0])
            out = unet(latents, t, context=context)
            out.float().pow(2).mean().backward()
        return counter.get_total_flops()
    finally:
        for cls, forward in patched:
            cls.forward = forward


def step_flops(webui_dir: str, size: int) -> dict[str, float]:
    """FLOPs of one batch-1 step: {'TI Trainer': ..., 'built-in': ..., 'forward': ...}."""
    unet, text = _networks(webui_dir)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        latents = torch.randn(1, 4, size // 8, size // 8, device="meta")
        unet(latents, torch.zeros(1, dtype=torch.long, device="meta"), context=torch.randn(1, 77, 768, device="meta"))
    forward = counter.get_total_flops()
    return {
        "forward": float(forward),
        "TI Trainer": float(_count(unet, text, size, weights=False, recompute=False)),
        "built-in": float(_count(unet, text, size, weights=True, recompute=True)),
    }


def matmul_peak(n: int = 2048, seconds: float = 3.0) -> float:
    """fp32 FLOP/s of a large square matmul on this CPU (best of repeated runs): the practical ceiling."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        torch.matmul(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


if __name__ == "__main__":
    webui = sys.argv[1] if len(sys.argv) > 1 else "/work/webui/a1111"
    for px in (256, 512):
        counts = step_flops(webui, px)
        print(px, {k: f"{v / 1e12:.3f} TFLOP" for k, v in counts.items()})
    print(f"fp32 matmul peak: {matmul_peak() / 1e9:.1f} GFLOP/s, {torch.get_num_threads()} threads")
