"""Example-image figures: input, auxiliary, outputs, targets and error maps of fixed slices."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PANELS = (
    ("input", "undersampled LR input"),
    ("aux", "auxiliary LR"),
    ("rec", "rec output"),
    ("sr", "SR output"),
    ("sr_target", "HR target"),
    ("sr_error", "|SR - HR| x5"),
)


def example_figure(examples: list[dict], title: str = "") -> plt.Figure:
    """One row per example slice, one column per panel of :data:`PANELS`."""
    rows = max(1, len(examples))
    fig, axes = plt.subplots(rows, len(PANELS), figsize=(2.2 * len(PANELS), 2.3 * rows), squeeze=False)
    for row, example in enumerate(examples):
        target = example["sr_target"].numpy()
        vmax = float(target.max()) or 1.0
        images = {**{k: v.numpy() for k, v in example.items() if hasattr(v, "numpy")}}
        images["sr_error"] = np.abs(images["sr"] - target) * 5
        for col, (key, label) in enumerate(PANELS):
            ax = axes[row, col]
            normalised_input = key in ("input", "aux")
            ax.imshow(images[key], cmap="gray", vmin=None if normalised_input else 0, vmax=None if normalised_input else vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(label, fontsize=8)
        axes[row, 0].set_ylabel(f"{example['fname']}\nslice {example['slice_idx']}", fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


class ExampleImageLogger(L.Callback):
    """After each validation epoch, save the example figure as PNG and send it to W&B."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        examples = getattr(pl_module, "example_images", [])
        if not examples or trainer.sanity_checking or not trainer.is_global_zero:
            return
        fig = example_figure(examples, title=f"epoch {trainer.current_epoch}")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / "val_examples.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="val/examples", images=[str(path)], step=trainer.global_step)
