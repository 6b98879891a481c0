"""Example images of a run: the validation examples (slices spread across the volumes) drawn
with the report's comparison figure (:func:`cmfnet.mri.figures.plot_comparison`), and the test
examples saved as arrays (:func:`save_examples`)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch

from cmfnet.mri.figures import SliceComparison, plot_comparison


def example_comparisons(examples: list[dict]) -> list[SliceComparison]:
    """One :class:`SliceComparison` per kept example: the SR output against its HR target, with
    the normalised LR and auxiliary inputs."""
    return [
        SliceComparison(
            target=example["sr_target"].numpy(),
            outputs=[("SR output", example["sr"].numpy())],
            lr_input=example["input"].numpy(),
            aux_input=example["aux"].numpy(),
            label=f"{example['fname']}\nslice {example['slice_idx']}",
        )
        for example in examples
    ]


class ExampleImageLogger(L.Callback):
    """After each validation epoch, save the example figure as PNG and send it to W&B."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        examples = getattr(pl_module, "example_images", [])
        if not examples or trainer.sanity_checking or not trainer.is_global_zero:
            return
        path = plot_comparison(
            example_comparisons(examples),
            self.out_dir / "val_examples.png",
            title=f"validation, epoch {trainer.current_epoch}: per-slice PSNR/SSIM, "
            "data range = slice max (tables: per volume)",
        )
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="val/examples", images=[str(path)], step=trainer.global_step)


def save_examples(examples: list[dict], path: Path) -> None:
    """Save the kept test slices (de-normalised outputs and targets, normalised inputs) for
    figures across runs: arrays ``{key}_{i}`` plus ``fname_{i}`` and ``slice_idx_{i}``."""
    arrays = {}
    for i, example in enumerate(examples):
        for key, value in example.items():
            arrays[f"{key}_{i}"] = (
                value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            )
    np.savez_compressed(path, count=len(examples), **arrays)
