"""The simulated validation path: the streaming metrics against the earlier gather-then-score path,
each timed in a process of its own.
"""

from __future__ import annotations

import time
from typing import Any

from cmfnet.commands.bench.memory import PeakRSS, reset_resident_peak, resident_peak, sync
from cmfnet.commands.bench.model_step import measure_model_isolated
from cmfnet.commands.bench.settings import VALIDATION_PATHS


def simulated_validation(cfg, device: str):
    """Batches of a random validation set: ``validation_volumes`` x ``validation_slices`` slices
    in volume order, ``batch`` at a time, as ``(fnames, slice_idx, scored, data_range)`` with
    ``scored = {out: (pred, target)}`` of shapes (B, 1, S, S) for SR and (B, 1, S / scale,
    S / scale) for rec, on ``device``, fresh tensors for every batch (as a model's outputs
    are); ``data_range = {out: (B,)}``. Targets are uniform in [0, 1] with a 1 in every slice
    (so each volume's maximum is 1, known in advance), predictions the target plus noise."""
    import torch

    gen = torch.Generator(device=device).manual_seed(0)
    hr = int(cfg.validation_hr_size)
    sides = {"sr": hr, "rec": hr // int(cfg.scale)}
    keys = [
        (f"file{v:04d}.h5", s)
        for v in range(int(cfg.validation_volumes))
        for s in range(int(cfg.validation_slices))
    ]
    for start in range(0, len(keys), int(cfg.batch)):
        chunk = keys[start : start + int(cfg.batch)]
        scored, data_range = {}, {}
        for out, side in sides.items():
            target = torch.rand(len(chunk), 1, side, side, generator=gen, device=device)
            target[..., 0, 0] = 1.0
            noise = torch.randn(target.shape, generator=gen, device=device)
            scored[out] = (target + 0.1 * noise, target)
            data_range[out] = torch.ones(len(chunk), device=device)
        yield [k[0] for k in chunk], [k[1] for k in chunk], scored, data_range


def earlier_eval_step(collectors: dict, fnames, slice_idx, scored: dict) -> None:
    """What the module did with a batch before the streaming metrics: every output and target
    copied to host numpy and kept per slice (:class:`~cmfnet.mri.metrics.VolumeMetrics`)."""
    for out, (pred, target) in scored.items():
        pred_np = pred.float().squeeze(1).cpu().numpy()
        target_np = target.float().squeeze(1).cpu().numpy()
        for i, (fname, index) in enumerate(zip(fnames, slice_idx)):
            collectors[out].add(fname, index, target_np[i], pred_np[i])


def time_validation_path(cfg, device: str, streaming: bool) -> dict[str, Any]:
    """One metric path over :func:`simulated_validation`, after one untimed slice (imports,
    thread pools, first allocations): seconds spent in the batches (making a batch not
    counted) and at the epoch's end (scoring, or reducing), memory, and the per-volume
    ``scores`` of each output. Memory: ``state_mb``, what the collectors keep after the last
    batch (the earlier path: every slice's arrays; exact); ``peak_host_mb``, the kernel's
    resident high-water mark above what the process held before, which no sampling can miss
    (temporaries included, and what glibc keeps of them once freed: after one streaming loop
    of 1,200 slices that varied between 36 and 520 MB from run to run); on a GPU
    ``peak_device_mb``, the allocator's peak above what was allocated before.
    The earlier path also times pickling its collectors, which ``all_gather_object`` did on
    every rank under DDP, and gives the pickle's size."""
    import gc
    import pickle

    import torch
    from omegaconf import OmegaConf

    from cmfnet.mri.metrics import OUTPUTS, StreamingVolumeMetrics, VolumeMetrics

    def collectors_for() -> dict:
        return {
            out: StreamingVolumeMetrics(device) if streaming else VolumeMetrics() for out in OUTPUTS
        }

    def score(collectors: dict, batches) -> float:
        seconds = 0.0
        for fnames, slice_idx, scored, data_range in batches:
            sync(device)
            start = time.perf_counter()
            if streaming:
                for out, (pred, target) in scored.items():
                    collectors[out].update(
                        fnames, slice_idx, target.squeeze(1), pred.squeeze(1), data_range[out]
                    )
            else:
                earlier_eval_step(collectors, fnames, slice_idx, scored)
            sync(device)
            seconds += time.perf_counter() - start
        return seconds

    warm_up = OmegaConf.merge(cfg, {"validation_volumes": 1, "validation_slices": 1})
    warm = collectors_for()
    score(warm, simulated_validation(warm_up, device))
    {out: collected.compute() for out, collected in warm.items()}
    del warm
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    device_base = torch.cuda.memory_allocated() if device == "cuda" else 0
    host_base = PeakRSS.current()
    reset_resident_peak()
    collectors = collectors_for()
    row: dict[str, Any] = {}
    row["step_s"] = score(collectors, simulated_validation(cfg, device))
    row["state_mb"] = sum(c.nbytes() for c in collectors.values()) / 2**20
    if not streaming:
        start = time.perf_counter()
        pickled = pickle.dumps(collectors)
        row["pickle_dumps_s"] = time.perf_counter() - start
        start = time.perf_counter()
        pickle.loads(pickled)
        row["pickle_loads_s"] = time.perf_counter() - start
        row["pickled_mb"] = len(pickled) / 2**20
        del pickled
    start = time.perf_counter()
    row["scores"] = {out: collectors[out].compute()["per_volume"] for out in OUTPUTS}
    row["end_s"] = time.perf_counter() - start
    slices = int(cfg.validation_volumes) * int(cfg.validation_slices)
    row["slices_per_s"] = slices / (row["step_s"] + row["end_s"])
    row["peak_host_mb"] = (resident_peak() - host_base) / 2**20
    if device == "cuda":
        row["peak_device_mb"] = (torch.cuda.max_memory_allocated() - device_base) / 2**20
    return row


def measure_validation(cfg, overrides: list[str]) -> dict[str, Any]:
    """The earlier and the streaming metric path over the same simulated validation set, each in
    a process of its own (:func:`time_validation_path`). Ratios are streaming / earlier; the
    largest differences between their scores check that both measured the same thing."""
    slices = int(cfg.validation_volumes) * int(cfg.validation_slices)
    hr = int(cfg.validation_hr_size)
    result: dict[str, Any] = {
        "volumes": int(cfg.validation_volumes),
        "slices_per_volume": int(cfg.validation_slices),
        "slices": slices,
        "sr_size": [hr, hr],
        "rec_size": [hr // int(cfg.scale)] * 2,
        "batch": int(cfg.batch),
    }
    for path in VALIDATION_PATHS:
        row = measure_model_isolated(overrides, path)
        result["device"] = row.pop("device")
        result[path.split("_", 1)[1]] = row
    streamed = result["streaming"].pop("scores")
    earlier = result["earlier"].pop("scores")
    result["speed_ratio"] = result["streaming"]["slices_per_s"] / result["earlier"]["slices_per_s"]
    result["state_ratio"] = result["streaming"]["state_mb"] / result["earlier"]["state_mb"]
    result["peak_host_memory_ratio"] = (
        result["streaming"]["peak_host_mb"] / result["earlier"]["peak_host_mb"]
    )
    pairs = [
        (streamed[out][name][metric], earlier[out][name][metric], metric)
        for out in streamed
        for name in streamed[out]
        for metric in ("psnr", "ssim", "nmse")
    ]
    result["largest_ssim_difference"] = max(abs(a - b) for a, b, m in pairs if m == "ssim")
    result["largest_relative_psnr_nmse_difference"] = max(
        abs(a - b) / abs(b) for a, b, m in pairs if m != "ssim"
    )
    return result


def print_validation(result: dict) -> None:
    """The validation measurement as a few lines."""
    from rich.console import Console

    earlier, streaming = result["earlier"], result["streaming"]

    def memory(row: dict) -> str:
        text = f"{row['state_mb']:.2f} MB held, host peak {row['peak_host_mb']:.1f} MB"
        if "peak_device_mb" in row:
            text += f", device peak {row['peak_device_mb']:.1f} MB"
        return text

    lines = [
        f"validation metrics: {result['volumes']} volumes x {result['slices_per_volume']} slices "
        f"({result['slices']}), SR {result['sr_size'][0]}x{result['sr_size'][1]} + rec "
        f"{result['rec_size'][0]}x{result['rec_size'][1]}, batch {result['batch']}, on "
        f"{result['device']}",
        f"  earlier (host copies, scikit-image at the end): {earlier['slices_per_s']:.1f} "
        f"slices/s (batches {earlier['step_s']:.2f} s + end {earlier['end_s']:.2f} s); "
        f"{memory(earlier)}; pickled for all_gather_object {earlier['pickled_mb']:.0f} MB "
        f"(dumps {earlier['pickle_dumps_s']:.2f} s, loads {earlier['pickle_loads_s']:.2f} s)",
        f"  streaming: {streaming['slices_per_s']:.1f} slices/s (batches "
        f"{streaming['step_s']:.2f} s + end {streaming['end_s']:.3f} s); {memory(streaming)}",
        f"  streaming / earlier: {result['speed_ratio']:.2f}x the speed, "
        f"{result['state_ratio']:.1e}x the memory held, {result['peak_host_memory_ratio']:.3f}x "
        "the host peak",
        f"  largest difference between their scores: SSIM {result['largest_ssim_difference']:.1e}"
        f", PSNR/NMSE {result['largest_relative_psnr_nmse_difference']:.1e} relative",
    ]
    Console(width=130).print("\n".join(lines))
