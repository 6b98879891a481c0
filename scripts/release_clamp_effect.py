"""How much ``scoring=release`` changes the SR target of a protocol's test set.

The release scoring differs from fastMRI's only in its target: clamped to
``scale * (mean +- 6 std)`` of the zero-filled LR input (cmfnet/mri/scoring.py). That depends on the
data and the masks, not on the model, so one pass over the test set says for every model at once
whether, and how much, the release's numbers can differ from ours:

    python scripts/release_clamp_effect.py experiment=paper_small
    python scripts/release_clamp_effect.py experiment=hr160

Each cell (scale x acceleration) prints the test pixels the clamp changes, the volumes whose max
(the data range of PSNR and SSIM) it lowers, and the largest relative change of a volume max;
the last column counts the pixels a clamp at our own statistics (gain 1, had the release divided
its LR input by the scale) would change.
Overrides after the script name are Hydra overrides of the run config (conf/train.yaml).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir

from cmfnet.lit.injections import data_kwargs
from cmfnet.mri.scoring import Scoring

REPO = Path(__file__).resolve().parent.parent
CELLS = [(2, 4), (2, 8), (4, 4), (4, 8)]


def clamp_effect(overrides: list[str]) -> dict:
    """Pixels changed and volume maxima lowered by the release's target clamp on the test set."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    scale = int(cfg.scale)
    release = Scoring("release", outputs=("sr",), target_clamp=6.0, stats_gain=scale)
    unscaled = Scoring("gain1", outputs=("sr",), target_clamp=6.0, stats_gain=1.0)
    datamodule = hydra.utils.instantiate(cfg.data, **data_kwargs(cfg), num_workers=0)
    datamodule.prepare_data()
    datamodule.setup("test")
    dataset = datamodule.datasets["test"]
    changed = changed_gain1 = pixels = 0
    max_raw: dict[str, float] = defaultdict(float)
    max_clamped: dict[str, float] = defaultdict(float)
    for index in range(len(dataset)):
        sample = dataset[index]
        mean, std = sample.mean.view(1, 1, 1), sample.std.view(1, 1, 1)
        target = sample.sr_target * std + mean
        clamped = release.target(target, mean, std)
        changed += int((clamped != target).sum())
        changed_gain1 += int((unscaled.target(target, mean, std) != target).sum())
        pixels += target.numel()
        max_raw[sample.fname] = max(max_raw[sample.fname], float(target.max()))
        max_clamped[sample.fname] = max(max_clamped[sample.fname], float(clamped.max()))
    lowered = [name for name in max_raw if max_clamped[name] < max_raw[name]]
    worst = max((1 - max_clamped[n] / max_raw[n] for n in max_raw), default=0.0)
    return {
        "pixels": pixels,
        "changed": changed,
        "changed_gain1": changed_gain1,
        "volumes": len(max_raw),
        "lowered": len(lowered),
        "worst": worst,
    }


def main(argv: list[str]) -> int:
    torch.set_grad_enabled(False)
    print("cell  | test pixels | clamped | volumes | max lowered | largest max change | gain 1")
    for scale, accel in CELLS:
        got = clamp_effect(argv + [f"scale={scale}", f"accel={accel}", "logger=none"])
        print(
            f"x{scale}/R{accel} | {got['pixels']:>11} | {got['changed']:>7} | {got['volumes']:>7} "
            f"| {got['lowered']:>11} | {100 * got['worst']:>16.3f} % | {got['changed_gain1']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
