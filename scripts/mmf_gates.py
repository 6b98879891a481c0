"""The MMF gates of trained CMF-Nets: how much of each branch's features passes each gate.

MMF updates a branch X as ``X * sigmoid(L_X + G_X) + M`` (cmfnet/models/cmfnet.py). Along the
SR branch the features carried from the fused stage pass six such gates before the SR tail, so
their product bounds how much of them arrives there. For every job folder given (or every job
of a sweep folder) whose model has gated MMF, this runs the best checkpoint on the job's test
set and prints, per MMF module, the mean SR-branch and rec-branch gate over test pixels and
channels, and the product of the six means:

    python scripts/mmf_gates.py multirun/hr160/<ts>

Run it from the folder the sweep ran in (the job configs name their data relative to it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from cmfnet.lit.datamodule import collate_samples
from cmfnet.lit.injections import data_kwargs
from cmfnet.models.cmfnet import MutualFusion
from cmfnet.runs.checkpoint import build_model_from_checkpoint


def branch_gates(fusion: MutualFusion, sr: torch.Tensor, rec: torch.Tensor) -> tuple[float, float]:
    """Mean gate sigmoid(L + G) of the SR and rec branches for features (B, C, H, W)."""
    sr_gate = torch.sigmoid(fusion.sr_local(sr) + fusion.sr_global(F.adaptive_avg_pool2d(sr, 1)))
    rec_gate = torch.sigmoid(
        fusion.rec_local(rec) + fusion.rec_global(F.adaptive_avg_pool2d(rec, 1))
    )
    return float(sr_gate.mean()), float(rec_gate.mean())


def job_gates(job: Path, batch_size: int = 4) -> list[tuple[float, float]]:
    """Per MMF module, (SR gate, rec gate) averaged over the job's test slices."""
    ckpt = sorted((job / "checkpoints").glob("best-*.ckpt"))[-1]
    model, config = build_model_from_checkpoint(ckpt)
    cfg = OmegaConf.create(config)
    datamodule = hydra.utils.instantiate(cfg.data, **data_kwargs(cfg), num_workers=0)
    datamodule.setup("test")
    dataset = datamodule.datasets["test"]
    sums: list[list[float]] = [[0.0, 0.0] for _ in model.mutual_fusions]
    batches = 0

    def record(step: int):
        def hook(fusion, inputs, output):
            sr_gate, rec_gate = branch_gates(fusion, *inputs)
            sums[step][0] += sr_gate
            sums[step][1] += rec_gate

        return hook

    handles = [m.register_forward_hook(record(i)) for i, m in enumerate(model.mutual_fusions)]
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            batch = collate_samples(items)
            model(batch.target_input, batch.aux_input)
            batches += 1
    for handle in handles:
        handle.remove()
    return [(sr / batches, rec / batches) for sr, rec in sums]


def gated_jobs(folders: list[Path]) -> list[Path]:
    """The completed job folders among (or inside) ``folders`` whose model has gated MMF."""
    jobs = []
    for folder in folders:
        candidates = [folder] if (folder / "config.yaml").is_file() else sorted(folder.iterdir())
        for job in candidates:
            config, record = job / "config.yaml", job / "metrics.json"
            if not config.is_file() or not record.is_file():
                continue
            if json.loads(record.read_text()).get("status") != "completed":
                continue
            model = OmegaConf.load(config).model
            if model.get("mutual_fusion") and model.get("mmf_update", "gated") == "gated":
                jobs.append(job)
    return jobs


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    print("| job | SR gates (MMF 1-6) | SR product | rec gates (MMF 1-6) | rec product |")
    print("|---|---|---|---|---|")
    for job in gated_jobs([Path(a) for a in argv]):
        gates = job_gates(job)
        sr = [g for g, _ in gates]
        rec = [g for _, g in gates]
        print(
            f"| {job.name} | {' '.join(f'{g:.2f}' for g in sr)} | {torch.tensor(sr).prod():.4f} "
            f"| {' '.join(f'{g:.2f}' for g in rec)} | {torch.tensor(rec).prod():.4f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
