"""One model's training and inference step on random tensors of the configured sizes, with each
speed option (alone or in a process of its own).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import nullcontext
from typing import Any

from cmfnet.commands.bench.memory import PeakRSS, peak_memory_mb, sync
from cmfnet.runs.config import lowres_size

#: Dense bf16 tensor-core peaks (FLOP/s) by device-name fragment, from the vendors' data sheets;
#: the first fragment found in the device name wins, so variants come before their family.
BF16_PEAK_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H200", 989.4e12),
    ("H100", 989.4e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("L4", 121e12),
)


def bf16_peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak of a CUDA device from its name, or None when it is not in the table."""
    return next((peak for fragment, peak in BF16_PEAK_FLOPS if fragment in device_name), None)


def measure_model(cfg, option: str, device: str) -> dict[str, Any]:
    """Train and inference samples/s and peak memory of one speed option, or of several joined
    by ``+`` (e.g. ``bf16+channels_last+compile``)."""
    import hydra
    import torch

    torch.manual_seed(0)
    base_rss = PeakRSS.current()
    h, w = lowres_size(cfg)
    batch = int(cfg.batch)
    parts = set(option.split("+"))
    switches = {
        name: name in parts for name in ("channels_last", "compile", "activation_checkpointing")
    }
    model = hydra.utils.instantiate(cfg.model).to(device)
    model = hydra.utils.instantiate(cfg.performance, **switches)(model)
    if device == "cuda":
        torch.backends.cudnn.benchmark = "cudnn_benchmark" in parts
        torch.cuda.reset_peak_memory_stats()
    autocast = (
        torch.autocast(device_type=device, dtype=torch.bfloat16)
        if "bf16" in parts
        else nullcontext()
    )
    loss_fn = hydra.utils.instantiate(cfg.loss)
    optimizer = (
        hydra.utils.instantiate(cfg.optimizer)(model.parameters())
        if getattr(model, "trainable", True)
        else None
    )
    inputs = torch.randn(batch, 1, h, w, device=device), torch.randn(batch, 1, h, w, device=device)
    targets = (
        torch.randn(batch, 1, h, w, device=device),
        torch.randn(batch, 1, h * cfg.scale, w * cfg.scale, device=device),
    )

    def train_step() -> None:
        with autocast:
            rec, sr = model(*inputs)
            loss = loss_fn(rec.float(), sr.float(), *targets).total
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    result: dict[str, Any] = {"option": option}
    with PeakRSS() as rss:
        model.train()
        start = time.perf_counter()
        for _ in range(cfg.warmup_steps):
            train_step()
        sync(device)
        result["warmup_s"] = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(cfg.timed_steps):
            train_step()
        sync(device)
        result["train_samples_per_s"] = batch * cfg.timed_steps / (time.perf_counter() - start)
        model.eval()
        with torch.no_grad(), autocast:
            for _ in range(cfg.warmup_steps):
                model(*inputs)
            sync(device)
            start = time.perf_counter()
            for _ in range(cfg.timed_steps):
                model(*inputs)
            sync(device)
        result["infer_samples_per_s"] = batch * cfg.timed_steps / (time.perf_counter() - start)
    result["peak_memory_mb"] = peak_memory_mb(device, rss, base_rss)
    return result


def measure_model_isolated(overrides: list[str], option: str) -> dict[str, Any]:
    """:func:`measure_model` (or the measurement ``option`` names: a loop option, a validation
    path) in a fresh process, so memory peaks and warm-up of one option never leak into
    another's numbers."""
    command = [sys.executable, "-m", "cmfnet.cli", "bench", "--only-option", option, *overrides]
    proc = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["measurement failed"])[-1])
    return json.loads(lines[-1])
