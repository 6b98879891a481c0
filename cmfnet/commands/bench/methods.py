"""``cmfnet bench methods=[...]``: what each compared method costs, beside a reference method.

For every method (a ``model`` config) at the bench's scale, data size and batch: parameters
and MACs per sample (counted on the meta device, nothing allocated), the memory its training
needs at least (fp32 weights, gradients and Adam's two moments: 16 bytes per parameter), and,
where that floor fits the memory at hand, train and inference samples/s and peak memory, each
measured in a process of its own
(:func:`cmfnet.commands.bench.model_step.measure_model_isolated`, eager fp32).
Speeds and memory are also given as ratios to the reference method measured in the same run.
"""

from __future__ import annotations

import os
from typing import Any

#: fp32 weights, their gradients and Adam's two moments
TRAINING_BYTES_PER_PARAMETER = 16


def available_memory_bytes(device: str) -> int:
    """Free memory where the model would train: the GPU's free memory, or the host's
    ``MemAvailable`` (Linux), else its physical memory."""
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def count_method(overrides: list[str], method: str) -> dict[str, Any]:
    """Parameters, MACs per sample at the LR size and the training-memory floor of ``method``,
    from a model built on the meta device."""
    import hydra
    import torch

    from cmfnet.commands.bench.settings import compose_bench_config
    from cmfnet.models.summary import model_summary
    from cmfnet.runs.config import lowres_size

    cfg = compose_bench_config([*overrides, f"model={method}"])
    with torch.device("meta"):
        model = hydra.utils.instantiate(cfg.model)
    summary = model_summary(model, input_hw=lowres_size(cfg), scale=cfg.scale)
    return {
        "method": method,
        "params": summary.total_params,
        "macs_per_sample": summary.macs,
        "lr_size": list(summary.input_hw),
        "training_memory_floor_gb": summary.trainable_params * TRAINING_BYTES_PER_PARAMETER / 2**30,
    }


def measure_methods(cfg, overrides: list[str], device: str) -> dict[str, Any]:
    """Counts for every method of ``cfg.methods`` (the reference first), and timings where the
    training-memory floor fits ``cfg.methods_memory_fraction`` of the memory available now."""
    from cmfnet.commands.bench.judge import save_partial
    from cmfnet.commands.bench.model_step import measure_model_isolated

    methods = [cfg.methods_reference, *(m for m in cfg.methods if m != cfg.methods_reference)]
    budget = available_memory_bytes(device) * float(cfg.methods_memory_fraction)
    base = [o for o in overrides if not o.startswith(("methods=", "model="))]
    rows = []
    for method in methods:
        row = count_method(base, method)
        if row["training_memory_floor_gb"] * 2**30 > budget:
            row["skipped"] = (
                f"training needs at least {row['training_memory_floor_gb']:.1f} GB (weights, "
                f"gradients, Adam); {budget / 2**30:.1f} GB available for it here"
            )
        else:
            try:
                row.update(measure_model_isolated([*base, f"model={method}"], "eager_fp32"))
            except RuntimeError as err:  # out of memory, or a size the model refuses
                row["skipped"] = str(err)
        rows.append(row)
        results = {"methods": rows}
        save_partial(cfg, results, f"{method}: {row.get('skipped') or 'timed'}")
    reference = rows[0]
    for row in rows:
        row["params_ratio"] = row["params"] / reference["params"]
        row["macs_ratio"] = row["macs_per_sample"] / reference["macs_per_sample"]
        for key in ("train_samples_per_s", "infer_samples_per_s", "peak_memory_mb"):
            if key in row and key in reference:
                row[key.replace("samples_per_s", "ratio").replace("_mb", "_ratio")] = (
                    row[key] / reference[key]
                )
    return {"reference": reference["method"], "batch": cfg.batch, "scale": cfg.scale, "rows": rows}


def print_methods(result: dict, device: str) -> None:
    """The methods' table: counts, memory floor, speeds and peak memory with their ratios."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"cmfnet bench methods: x{result['scale']}, batch {result['batch']}, {device}, "
        f"eager fp32; ratios against {result['reference']} (same run)"
    )
    for header in (
        "method",
        "params",
        "GMACs/sample",
        "train memory floor",
        "train samples/s",
        "infer samples/s",
        "peak memory MB",
        "note",
    ):
        table.add_column(header, justify="left" if header == "method" else "right")

    def with_ratio(row: dict, key: str, ratio_key: str, fmt: str) -> str:
        if key not in row:
            return "-"
        ratio = row.get(ratio_key)
        return f"{row[key]:{fmt}}" + (f" ({ratio:.2f}x)" if ratio is not None else "")

    for row in result["rows"]:
        table.add_row(
            row["method"],
            f"{row['params'] / 1e6:.2f} M ({row['params_ratio']:.2f}x)",
            f"{row['macs_per_sample'] / 1e9:.2f} ({row['macs_ratio']:.2f}x)",
            f"{row['training_memory_floor_gb']:.2f} GB",
            with_ratio(row, "train_samples_per_s", "train_ratio", ".2f"),
            with_ratio(row, "infer_samples_per_s", "infer_ratio", ".2f"),
            with_ratio(row, "peak_memory_mb", "peak_memory_ratio", ".0f"),
            row.get("skipped", ""),
        )
    Console(width=200).print(table)
