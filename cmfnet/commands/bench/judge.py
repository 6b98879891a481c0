"""Judging results against the configured targets, printing them and writing them to the
bench's JSON (also part-way, so a bench stopped by a time limit keeps what it measured)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from cmfnet.commands.bench.settings import BENCH_WRITER


def check_targets(results: dict, targets) -> list[dict[str, Any]]:
    """The measured figures against ``targets`` (``conf/bench.yaml``): the loader against the
    fastest training option, the best training fraction of the bf16 peak (GPU only), and the
    job's start-up; a figure that was not measured is left out."""
    peaks = [
        row["train_fraction_of_bf16_peak"]
        for row in results["model_options"]
        if "train_fraction_of_bf16_peak" in row
    ]
    measured = {
        "data_to_model_ratio": (results.get("data_to_model_ratio"), ">="),
        "bf16_peak_fraction": (max(peaks) if peaks else None, ">="),
        "job_start_to_first_step_s": (
            (results.get("launch") or {}).get("job_start_to_first_step_s"),
            "<=",
        ),
    }
    checks = []
    for name, target in targets.items():
        if name not in measured:
            raise ValueError(f"targets.{name}: unknown target; choose from {sorted(measured)}")
        value, compare = measured[name]
        if value is not None:
            met = value >= target if compare == ">=" else value <= target
            checks.append(
                {
                    "name": name,
                    "value": value,
                    "compare": compare,
                    "target": float(target),
                    "met": met,
                }
            )
    return checks


def print_results(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=(
            f"cmfnet bench: {results['model']} x{results['scale']} batch {results['batch']} "
            f"on {results['device']}"
        )
    )
    columns = [
        "option",
        "train samples/s",
        "ratio",
        "infer samples/s",
        "ratio",
        "peak MB",
        "warm-up s",
    ]
    with_peak = any("train_fraction_of_bf16_peak" in row for row in results["model_options"])
    if with_peak:  # useful training FLOPs (3 x forward) against the device's dense bf16 peak
        columns.append("% bf16 peak")
    for column in columns:
        table.add_column(column, justify="right")
    for row in results["model_options"]:
        if "error" in row:
            table.add_row(row["option"], "error: " + row["error"], *[""] * (len(columns) - 2))
            continue
        label = f"{row['option']} [{row['precision']}]" if "precision" in row else row["option"]
        infer = (
            (f"{row['infer_samples_per_s']:.2f}", f"{row['infer_ratio']:.2f}x")
            if "infer_ratio" in row
            else ("-", "-")
        )
        cells = [
            label,
            f"{row['train_samples_per_s']:.2f}",
            f"{row['train_ratio']:.2f}x",
            *infer,
            f"{row['peak_memory_mb']:.0f}",
            f"{row['warmup_s']:.1f}",
        ]
        if with_peak:
            cells.append(f"{100 * row.get('train_fraction_of_bf16_peak', float('nan')):.1f}")
        table.add_row(*cells)
    console = Console(width=130)
    console.print(table)
    data = results.get("data_path", {})
    if data:
        lines = [
            (
                f"data path ({data['samples']} slices, one process): "
                f"cold {data['cold_samples_per_s']:.1f}/s, "
                f"warm (cached) {data['warm_samples_per_s']:.1f}/s"
            ),
            (
                f"  cache fill at set-up: {data['train_slices']} training slices "
                f"in {data['cache_fill_s']:.1f} s"
            ),
            f"  loader epochs of {data['loader_epoch_slices']} slices:",
        ]
        for workers in sorted(
            int(k.split("_")[1])
            for k in data
            if re.fullmatch(r"loader_\d+_workers_samples_per_s", k)
        ):
            name = f"loader_{workers}_workers"
            rate = data[f"{name}_samples_per_s"]
            each = f" ({rate / workers:.1f} per worker)" if workers else ""
            lines.append(
                f"  loader, {workers} workers: {rate:.1f} samples/s{each}, "
                f"first batch of an epoch after {data[f'{name}_first_batch_s']:.2f} s"
            )
            if workers:
                lines.append(
                    "    training process "
                    f"{data[f'{name}_training_process_cpu_ms_per_batch']:.2f} CPU ms/batch, "
                    f"workers {data[f'{name}_worker_cpu_ms_per_sample']:.3f} CPU ms/sample: "
                    f"{data[f'{name}_projected_samples_per_s']:.0f} samples/s "
                    "with a free core per process"
                )
        lines.append(
            "  loader (default workers) / what the fastest option "
            f"({results['data_to_model_ratio_against']}) trains on: "
            f"{results['data_to_model_ratio']:.1f}x"
        )
        console.print("\n".join(lines))
    if results.get("launch"):
        console.print(f"launch: {json.dumps(results['launch'])}")
    if results.get("macs_per_sample"):
        console.print(f"model: {results['macs_per_sample'] / 1e9:.2f} GMACs per sample forward")
    for check in results.get("targets", []):
        verdict = "[green]met[/green]" if check["met"] else "[red]missed[/red]"
        console.print(
            f"target {check['name']}: {check['value']:.3g} {check['compare']} "
            f"{check['target']:g} {verdict}"
        )


def save_partial(cfg, results: dict, line: str) -> None:
    """Say what was just measured (stderr), and write the results so far to ``json`` (marked
    ``"complete": false``), so a bench stopped by a time limit keeps what it measured."""
    print(f"measured {line}", file=sys.stderr, flush=True)
    write_results(cfg, results, complete=False)


def write_results(cfg, results: dict, complete: bool) -> None:
    """The results to ``json`` (if set), marked complete or not."""
    if cfg.json:
        from cmfnet.runs.io import write_json_atomic

        write_json_atomic(
            Path(cfg.json), {**results, "complete": complete, "written_by": BENCH_WRITER}
        )
