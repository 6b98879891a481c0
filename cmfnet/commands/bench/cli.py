"""``cmfnet bench``: runs the measurements the settings ask for and writes their JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cmfnet.commands.bench.judge import check_targets, print_results, save_partial, write_results
from cmfnet.commands.bench.loader import measure_data_path
from cmfnet.commands.bench.loops import measure_fit_loop, measure_launch
from cmfnet.commands.bench.model_step import bf16_peak_flops, measure_model, measure_model_isolated
from cmfnet.commands.bench.settings import (
    LOOP_OPTIONS,
    VALIDATION_PATHS,
    bench_keys,
    bench_settings_help,
    check_settings,
    compose_bench_config,
)
from cmfnet.commands.bench.validation import (
    measure_validation,
    print_validation,
    time_validation_path,
)
from cmfnet.runs.config import lowres_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides",
        nargs="*",
        help="key=value settings: the bench's own (below) and any of run.py's "
        "(model=, scale=, accel=, data=, ...), e.g. model=cmfnet scale=4 batch=8",
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = bench_settings_help()
    parser.add_argument("--only-option", metavar="NAME", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    import hydra
    import torch

    from cmfnet.models.summary import model_summary

    cfg = compose_bench_config(list(args.overrides))
    device = (
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    if args.only_option:
        if args.only_option in VALIDATION_PATHS:
            row = time_validation_path(
                cfg, device, streaming=args.only_option == "validation_streaming"
            )
            row["device"] = (
                torch.cuda.get_device_name()
                if device == "cuda"
                else f"cpu ({torch.get_num_threads()} threads)"
            )
            print(json.dumps(row))
        elif args.only_option in LOOP_OPTIONS:
            print(
                json.dumps(
                    measure_fit_loop(cfg, device, with_data=args.only_option == "fit_loop_data")
                )
            )
        else:
            print(json.dumps(measure_model(cfg, args.only_option, device)))
        return 0
    check_settings(cfg)
    if cfg.methods:  # what each compared method costs (cmfnet.commands.bench.methods)
        from cmfnet.commands.bench.methods import measure_methods, print_methods

        results = {"methods": measure_methods(cfg, list(args.overrides), device)}
        print_methods(results["methods"], device)
        write_results(cfg, results, complete=True)
        return 0
    if cfg.validation or cfg.datapath_scale:  # a measurement of its own, not the model's
        if cfg.validation:
            results = {"validation": measure_validation(cfg, list(args.overrides))}
            print_validation(results["validation"])
        else:  # the data path at the real split sizes (cmfnet.commands.bench.datapath)
            from cmfnet.commands.bench.datapath import measure_datapath_scale, print_datapath_scale

            results = {"datapath_scale": measure_datapath_scale(cfg)}
            print_datapath_scale(results["datapath_scale"])
        write_results(cfg, results, complete=True)
        return 0
    choices = [o for o in cfg.options if device == "cuda" or "cudnn_benchmark" not in o.split("+")]
    h, w = lowres_size(cfg)
    macs = model_summary(hydra.utils.instantiate(cfg.model), input_hw=(h, w), scale=cfg.scale).macs
    results: dict[str, Any] = {
        "model": cfg.model._target_.rsplit(".", 1)[-1],
        "scale": cfg.scale,
        "batch": cfg.batch,
        "lr_size": [h, w],
        "device": torch.cuda.get_device_name()
        if device == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "macs_per_sample": macs,
        "model_options": [],
    }
    reference = measure_model_isolated(list(args.overrides), "eager_fp32")
    for option in ["eager_fp32", *choices]:
        try:
            row = (
                reference
                if option == "eager_fp32"
                else measure_model_isolated(list(args.overrides), option)
            )
        except Exception as err:  # an option unsupported on this machine is reported, not fatal
            from cmfnet.runs.errors import one_line

            results["model_options"].append({"option": option, "error": one_line(err)})
            save_partial(cfg, results, f"{option}: error")
            continue
        row["train_ratio"] = row["train_samples_per_s"] / reference["train_samples_per_s"]
        if row["infer_samples_per_s"] is not None:
            row["infer_ratio"] = row["infer_samples_per_s"] / reference["infer_samples_per_s"]
        if device == "cuda":
            peak = bf16_peak_flops(results["device"])
            if peak:
                row["train_fraction_of_bf16_peak"] = (
                    3 * 2 * macs * row["train_samples_per_s"] / peak
                )
        results["model_options"].append(row)
        save_partial(
            cfg,
            results,
            (
                f"{option}: {row['train_samples_per_s']:.2f} train samples/s "
                f"({row['train_ratio']:.2f}x)"
            ),
        )
    default_workers = int(cfg.data.num_workers)
    results["data_path"] = measure_data_path(
        cfg, sorted({*map(int, cfg.data_workers), default_workers})
    )
    loader_rate = results["data_path"][f"loader_{default_workers}_workers_samples_per_s"]
    fastest = max(results["model_options"], key=lambda row: row.get("train_samples_per_s", 0.0))
    results["data_to_model_ratio"] = loader_rate / fastest["train_samples_per_s"]
    results["data_to_model_ratio_against"] = fastest["option"]
    save_partial(
        cfg,
        results,
        f"data path: {loader_rate:.1f} samples/s from the loader with {default_workers} workers",
    )
    if cfg.launch:
        results["launch"] = measure_launch(
            [
                o
                for o in args.overrides
                if o.lstrip("+").split("=")[0].split(".")[0] not in bench_keys()
            ]
        )
    results["targets"] = check_targets(results, cfg.targets)
    print_results(results)
    write_results(cfg, results, complete=True)
    return 0
