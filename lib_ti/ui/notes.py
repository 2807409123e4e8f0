"""What the user should know about a config on this machine before training: said when it is loaded, not after."""

from __future__ import annotations

from lib_ti.training.config import TrainConfig


def setup_notes(config: TrainConfig, device_type: str, bitsandbytes: bool) -> list[str]:
    """Notes on settings that will not apply as written here (no CUDA, no bitsandbytes), worded with the labels."""
    notes = []
    if device_type != "cuda":
        notes.append(f"Training runs on the {device_type.upper()}: expect seconds per step, not steps per second.")
    if config.mixed_precision != "no" and device_type != "cuda":
        notes.append(
            f"Mixed precision {config.mixed_precision} applies on CUDA only: training runs in full precision here."
        )
    if config.use_8bit_adam and device_type != "cuda":
        notes.append("8-bit AdamW needs a CUDA GPU: training uses AdamW here.")
    elif config.use_8bit_adam and not bitsandbytes:
        notes.append("8-bit AdamW needs the bitsandbytes package, which is not installed: training uses AdamW.")
    return notes
