"""The optimizer: 8-bit AdamW through bitsandbytes when asked and possible, AdamW otherwise."""

from __future__ import annotations

import torch


def make_optimizer(
    params: list[torch.Tensor], use_8bit: bool, device: torch.device
) -> tuple[torch.optim.Optimizer, str]:
    """The optimizer and a sentence for the user when the 8-bit one could not be used (said once, here)."""
    if use_8bit:
        if device.type != "cuda":
            note = "8-bit AdamW needs a CUDA GPU; training with AdamW instead."
        else:
            try:
                import bitsandbytes as bnb

                return bnb.optim.AdamW8bit(params, lr=1e-3, weight_decay=0.0), "Using 8-bit AdamW (bitsandbytes)."
            except Exception as e:  # missing package or a broken CUDA setup both mean: fall back
                note = f"8-bit AdamW is unavailable ({type(e).__name__}: {e}); training with AdamW instead."
        return _adamw(params, device), note
    return _adamw(params, device), ""


def _adamw(params: list[torch.Tensor], device: torch.device) -> torch.optim.Optimizer:
    """On CUDA the fused AdamW: one kernel, and the fp16 grad scaler steps it without reading anything back."""
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, fused=True if device.type == "cuda" else None)


def keep_own_settings(state: dict, optimizer: torch.optim.Optimizer) -> dict:
    """A saved state with this optimizer's implementation flags: a state saved on CUDA (fused) must resume on the
    CPU, where torch < 2.4 has no fused AdamW."""
    own = optimizer.state_dict()["param_groups"]
    flags = ("fused", "foreach", "capturable")
    groups = [
        {**saved, **{k: mine[k] for k in flags if k in mine}} for saved, mine in zip(state["param_groups"], own)
    ]
    return {**state, "param_groups": groups}
