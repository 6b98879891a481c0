"""The run's own Lightning training loop, on one held batch or fed by its DataLoader, and the time
from launch to the first training step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cmfnet.commands.bench.loader import RepeatedSlices
from cmfnet.commands.bench.memory import PeakRSS, peak_memory_mb, sync
from cmfnet.commands.bench.settings import REPO
from cmfnet.runs.config import lowres_size


def measure_fit_loop(cfg, device: str, with_data: bool = False) -> dict[str, Any]:
    """Training samples/s through the run's own loop: Lightning's Trainer built from the
    ``trainer`` config as ``python run.py`` resolves it on this device (precision, cuDNN
    autotuning), the LightningModule with its per-step checks and logging, the speed switches
    under ``performance:``, and the run's progress bar. Without ``with_data`` it trains on one
    random batch held on the host and moved to the device every step as a loader's batch would
    be; with it, on the run's own training DataLoader (the configured data, workers and pinned
    memory; the split listed again until it fills the steps), so the two rows' ratio is what the
    data path costs the loop. Inference is not measured."""
    import hydra
    import torch
    from lightning.pytorch.callbacks import Callback
    from torch.utils.data import DataLoader

    from cmfnet.data.transforms import JointSample
    from cmfnet.data.workers import collate_as_is
    from cmfnet.lit import injections

    torch.manual_seed(0)
    base_rss = PeakRSS.current()
    h, w = lowres_size(cfg)
    batch, scale = int(cfg.batch), int(cfg.scale)
    warmup, steps = int(cfg.warmup_steps), int(cfg.warmup_steps) + int(cfg.timed_steps)

    class StepTimer(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
            if batch_idx == warmup:
                sync(device)
                self.timed_from = time.perf_counter()

        def on_train_end(self, trainer, pl_module) -> None:
            sync(device)
            self.timed_to = time.perf_counter()

    model = hydra.utils.instantiate(cfg.performance)(hydra.utils.instantiate(cfg.model))
    loss = hydra.utils.instantiate(cfg.loss)
    module = hydra.utils.instantiate(cfg.module, _partial_=True)(
        **injections.module_kwargs(model, loss, run_config=None)
    )
    timer = StepTimer()
    bar = (cfg.get("callbacks") or {}).get("progress_bar")
    progress_bar = [hydra.utils.instantiate(bar)] if bar else []
    if with_data:
        datamodule = hydra.utils.instantiate(
            cfg.data, **injections.data_kwargs(cfg), batch_size=batch
        )
        datamodule.prepare_data()
        datamodule.setup("fit")
        datamodule.datasets["train"] = RepeatedSlices(datamodule.datasets["train"], steps * batch)
        loader = datamodule.train_dataloader()
    else:
        sample = JointSample(
            target_input=torch.randn(batch, 1, h, w),
            aux_input=torch.randn(batch, 1, h, w),
            rec_target=torch.randn(batch, 1, h, w),
            sr_target=torch.randn(batch, 1, h * scale, w * scale),
            mask=torch.ones(batch, w),
            mean=torch.zeros(batch),
            std=torch.ones(batch),
            sr_max=torch.zeros(batch),
            rec_max=torch.zeros(batch),
            fname=["bench.h5"] * batch,
            slice_idx=list(range(batch)),
        )
        loader = DataLoader(
            [sample] * steps,
            batch_size=None,
            collate_fn=collate_as_is,
            pin_memory=bool(cfg.data.pin_memory),
        )
    with tempfile.TemporaryDirectory() as tmp, PeakRSS() as rss:
        trainer = hydra.utils.instantiate(
            cfg.trainer,
            **({"accelerator": "cpu"} if device == "cpu" else {}),
            max_epochs=1,
            max_steps=steps,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            callbacks=[*progress_bar, timer],
            default_root_dir=tmp,
        )
        started = time.perf_counter()
        trainer.fit(module, train_dataloaders=loader)
    result: dict[str, Any] = {
        "option": "fit_loop_data" if with_data else "fit_loop",
        "precision": str(trainer.precision),
        "warmup_s": timer.timed_from - started,
        "train_samples_per_s": batch * int(cfg.timed_steps) / (timer.timed_to - timer.timed_from),
        "infer_samples_per_s": None,
    }
    if with_data:
        result["loader"] = {
            "workers": loader.num_workers,
            "pin_memory": loader.pin_memory,
            "split_slices": len(datamodule.datasets["train"].dataset),
        }
    result["peak_memory_mb"] = peak_memory_mb(device, rss, base_rss)
    return result


def measure_launch(overrides: list[str]) -> dict[str, Any]:
    """Wall time of ``python run.py ... trainer.max_steps=1`` and its in-process time to the
    first step."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            str(REPO / "run.py"),
            *overrides,
            "trainer.max_steps=1",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "logger=none",
            f"hydra.run.dir={tmp}/run",
        ]
        env = {
            **os.environ,
            "CMFNET_CACHE_DIR": os.environ.get(
                "CMFNET_CACHE_DIR", str(Path.cwd() / ".cache" / "cmfnet")
            ),
        }
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        metrics_path = Path(tmp) / "run" / "metrics.json"
        if proc.returncode != 0 or not metrics_path.is_file():
            errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")] or [
                "launch failed"
            ]
            return {"error": errors[-1]}
        metrics = json.loads(metrics_path.read_text())
    return {
        "launch_to_first_step_s": metrics.get("launch_to_first_step_s"),
        "job_start_to_first_step_s": metrics.get("job_start_to_first_step_s"),
        "run_wall_s": wall,
    }
