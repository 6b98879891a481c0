"""``cmfnet bench [overrides]``: training/inference throughput, peak memory, data-path speed and
launch-to-first-step time; every speed option is reported as a ratio to the plain fp32 eager
path measured in the same run (``conf/bench.yaml``).

Model steps run on random tensors of the configured sizes (LR = data HR size / scale), so the
numbers isolate the network; the data path is timed separately on the configured data set.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from cmfnet.config import lowres_size

REPO = Path(__file__).resolve().parents[1]

#: The speed options ``options=[...]`` may name, alone or joined by ``+``. ``options`` may also
#: name the run's own training loop (:func:`measure_fit_loop`), alone: ``fit_loop`` on one batch
#: held on the host, ``fit_loop_data`` fed by the run's training DataLoader.
SPEED_OPTIONS = ("channels_last", "bf16", "activation_checkpointing", "compile", "cudnn_benchmark")
LOOP_OPTIONS = ("fit_loop", "fit_loop_data")
#: the two metric paths ``validation=true`` measures, each in a process of its own
VALIDATION_PATHS = ("validation_streaming", "validation_earlier")
#: measured on the idle 2-core CPU machine, 2026-12-03: `cmfnet bench json=...` with the defaults
BENCH_RUN_TIME = (
    "typical run time: about 22 min with the defaults on an idle 2-core CPU (measured 22 min 13 s:"
    " the reference and each option run the full model in a process of their own, about 2.5 min"
    " each there); list fewer options to go faster, e.g. options=[bf16]."
)
BENCH_WRITER = "cmfnet bench"  # marks its JSON, which only a later bench may replace

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


def bench_settings_help() -> str:
    """The bench's own settings with their defaults and comments (conf/bench.yaml, without its
    defaults list), and what a default bench costs."""
    text = (REPO / "conf" / "bench.yaml").read_text()
    body = text[text.index("_self_") + len("_self_") :].strip("\n")
    return f"settings (conf/bench.yaml; set as key=value):\n{body}\n\n{BENCH_RUN_TIME}"


class PeakRSS:
    """Samples this process's resident memory in a thread; ``peak`` is the maximum in bytes."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.peak = self.current()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def peak_memory_mb(device: str, rss: PeakRSS, base_rss: int) -> float:
    """Peak memory of a measurement in MiB: the CUDA allocator's peak, or on the CPU the resident
    memory above what the process held before the model was built."""
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return (rss.peak - base_rss) / 2**20


def sync(device: str) -> None:
    """Wait for the device's queued work (timings on a GPU are otherwise of launches only)."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def bench_keys() -> set[str]:
    """The settings ``conf/bench.yaml`` adds to the run config (left out of the launch timing's
    run)."""
    from omegaconf import OmegaConf

    return set(OmegaConf.load(REPO / "conf" / "bench.yaml")) - {"defaults"}


def compose_bench_config(overrides: list[str]):
    """The bench config: ``conf/bench.yaml`` over ``conf/train.yaml``, composed with
    ``overrides``."""
    from hydra import compose, initialize_config_dir

    from cmfnet.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("bench", overrides=overrides)


def measure_model(cfg, option: str, device: str) -> dict[str, Any]:
    """Train and inference samples/s and peak memory of one speed option, or of several joined
    by ``+`` (e.g. ``bf16+channels_last+compile``)."""
    import hydra
    import torch

    from cmfnet.models import build_model
    from cmfnet.performance import apply_performance

    torch.manual_seed(0)
    base_rss = PeakRSS.current()
    h, w = lowres_size(cfg)
    batch = int(cfg.batch)
    parts = set(option.split("+"))
    switches = {
        name: name in parts for name in ("channels_last", "compile", "activation_checkpointing")
    }
    model = apply_performance(build_model(cfg.model).to(device), **{**cfg.performance, **switches})
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

    from cmfnet.data.paired import collate_as_is
    from cmfnet.data.transforms import JointSample
    from cmfnet.lit.datamodule import datamodule_from_config
    from cmfnet.models import build_model
    from cmfnet.performance import apply_performance

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

    model = apply_performance(build_model(cfg.model), **cfg.performance)
    module = hydra.utils.instantiate(
        cfg.module, model=model, loss=hydra.utils.instantiate(cfg.loss)
    )
    timer = StepTimer()
    bar = (cfg.get("callbacks") or {}).get("progress_bar")
    progress_bar = [hydra.utils.instantiate(bar)] if bar else []
    if with_data:
        datamodule = datamodule_from_config(cfg, batch_size=batch)
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


def measure_data_path(cfg, worker_counts: list[int]) -> dict[str, Any]:
    """The training data path as a run uses it.

    One process: samples/s of the first ``data_samples`` slices read and degraded (cold), then
    again from the cache with only masks drawn (warm). Set-up: seconds to fill the whole
    training split's cache with the configured workers. Loader: ``loader_epochs`` epochs of
    the training DataLoader over the filled cache with each worker count, as samples/s over
    whole epochs (workers start again every epoch, and that is counted) and the wait for each
    epoch's first batch. An epoch is the training split listed again up to
    ``loader_epoch_slices`` (null: the split once).

    The loader's CPU time is measured too, because on a machine with fewer cores than
    workers + 1 (this project's CI has 2) the wall-clock rate measures the contention, not the
    loader: the training process's CPU ms per batch (receiving and unpacking batches; on a GPU
    this thread also launches the model's kernels) and the workers' CPU ms per sample. From
    them, ``..._projected_samples_per_s`` is what a loader with workers delivers with a free
    core for every process: ``min(workers * 1000 / worker_ms_per_sample, 1000 * samples /
    training_process_ms)``. (Without workers the process's CPU time also counts its intra-op
    threads, so there is no projection: the wall-clock rate is the figure.)
    """
    from cmfnet.lit.datamodule import datamodule_from_config

    datamodule = datamodule_from_config(cfg, fill_cache=False)
    datamodule.prepare_data()
    probe = datamodule.build_dataset("train")
    count = min(int(cfg.data_samples), len(probe))
    result: dict[str, Any] = {"samples": count}
    for label in ("cold", "warm"):
        start = time.perf_counter()
        for i in range(count):
            probe[i]
        result[f"{label}_samples_per_s"] = count / (time.perf_counter() - start)
    datamodule.setup("fit")
    train = datamodule.datasets["train"]
    start = time.perf_counter()
    train.fill_cache(int(cfg.data.num_workers))
    result["train_slices"] = len(train)
    result["cache_fill_s"] = time.perf_counter() - start
    if cfg.loader_epoch_slices:
        datamodule.datasets["train"] = RepeatedSlices(train, int(cfg.loader_epoch_slices))
    result["loader_epoch_slices"] = len(datamodule.datasets["train"])
    for workers in worker_counts:
        datamodule.num_workers = workers
        loader = datamodule.train_dataloader()
        seen, batches, waits = 0, 0, []
        children_cpu, own_cpu, start = children_cpu_s(), time.process_time(), time.perf_counter()
        for epoch in range(int(cfg.loader_epochs)):
            loader.sampler.set_epoch(epoch)
            epoch_start = time.perf_counter()
            for step, batch in enumerate(loader):
                if step == 0:
                    waits.append(time.perf_counter() - epoch_start)
                seen += batch.target_input.shape[0]
                batches += 1
        # the workers are joined at the end of each epoch, so their CPU time is counted by now
        own_ms, workers_ms = (
            1e3 * (time.process_time() - own_cpu),
            1e3 * (children_cpu_s() - children_cpu),
        )
        name = f"loader_{workers}_workers"
        result[f"{name}_samples_per_s"] = seen / (time.perf_counter() - start)
        result[f"{name}_first_batch_s"] = sum(waits) / len(waits)
        result[f"{name}_training_process_cpu_ms_per_batch"] = own_ms / batches
        if workers:
            result[f"{name}_worker_cpu_ms_per_sample"] = workers_ms / seen
            result[f"{name}_projected_samples_per_s"] = min(
                1e3 * seen / own_ms, workers * 1e3 * seen / workers_ms
            )
    return result


class RepeatedSlices:
    """A training split listed again and again up to ``length`` items (at least once): a long
    epoch over a small split, so that the workers' start at every epoch weighs as little as on
    a real data set. Keeps the split's ``transform`` for the epoch-seeded sampler."""

    def __init__(self, dataset, length: int):
        self.dataset = dataset
        self.transform = dataset.transform
        self.length = max(length, len(dataset))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.dataset[index % len(self.dataset)]


def children_cpu_s() -> float:
    """User + system CPU seconds of this process's finished (joined) child processes."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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


def check_settings(cfg) -> None:
    """Refuse, before anything is measured, an option that is not a speed option, a ``+``
    combination of them, ``fit_loop`` or ``fit_loop_data``; a count (batch, steps, samples,
    epochs, workers) that is not an integer of at least its least value; and a ``json`` path
    that cannot be written (a folder, or below something that is not a folder)."""
    from cmfnet.config import is_int

    for option in cfg.options:
        unknown = (
            sorted(set(str(option).split("+")) - set(SPEED_OPTIONS))
            if option not in LOOP_OPTIONS
            else []
        )
        if unknown:
            raise ValueError(
                f"options: unknown speed option {unknown[0]!r} in {option!r}; "
                f"choose from {list(SPEED_OPTIONS)} (joined by +), fit_loop or fit_loop_data"
            )
    counts = [
        ("batch", cfg.batch, 1),
        ("timed_steps", cfg.timed_steps, 1),
        ("warmup_steps", cfg.warmup_steps, 0),
        ("data_samples", cfg.data_samples, 1),
        ("loader_epochs", cfg.loader_epochs, 1),
        *(
            (("loader_epoch_slices", cfg.loader_epoch_slices, 1),)
            if cfg.loader_epoch_slices is not None
            else ()
        ),
        *(("data_workers", workers, 0) for workers in cfg.data_workers),
    ]
    for key, value, least in counts:
        if not is_int(value) or value < least:
            raise ValueError(f"{key} must be an integer >= {least}, got {value!r}")
    if cfg.validation:
        check_validation_settings(cfg)
    fraction = cfg.methods_memory_fraction
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not 0 < fraction <= 1
    ):
        raise ValueError(f"methods_memory_fraction must be in (0, 1], got {fraction!r}")
    if cfg.json:
        from cmfnet.io import check_writable_file

        check_writable_file(Path(cfg.json), f"json={cfg.json}", written_by=BENCH_WRITER)


def check_validation_settings(cfg) -> None:
    """Refuse validation sizes that are not positive integers, or an SR side that ``scale`` does
    not divide into a rec side of at least SSIM's 7-pixel window."""
    from cmfnet.config import is_int
    from cmfnet.metrics import SSIM_WINDOW

    for key in ("validation_volumes", "validation_slices", "validation_hr_size"):
        if not is_int(cfg[key]) or cfg[key] < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {cfg[key]!r}")
    hr = int(cfg.validation_hr_size)
    if hr % cfg.scale or hr // cfg.scale < SSIM_WINDOW:
        raise ValueError(
            f"validation_hr_size={hr}: scale={cfg.scale} must divide it into a rec side of at "
            f"least {SSIM_WINDOW} (SSIM's window)"
        )


def reset_resident_peak() -> None:
    """Restart this process's resident high-water mark (Linux: ``/proc/self/clear_refs``);
    where it cannot be reset, the mark stays the process's whole lifetime peak."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def resident_peak() -> int:
    """This process's resident high-water mark in bytes (``VmHWM`` of ``/proc/self/status``)."""
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


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
    copied to host numpy and kept per slice (:class:`~cmfnet.metrics.VolumeMetrics`)."""
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

    from cmfnet.metrics import OUTPUTS, StreamingVolumeMetrics, VolumeMetrics

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


def save_partial(cfg, results: dict, line: str) -> None:
    """Say what was just measured (stderr), and write the results so far to ``json`` (marked
    ``"complete": false``), so a bench stopped by a time limit keeps what it measured."""
    print(f"measured {line}", file=sys.stderr, flush=True)
    write_results(cfg, results, complete=False)


def write_results(cfg, results: dict, complete: bool) -> None:
    """The results to ``json`` (if set), marked complete or not."""
    if cfg.json:
        from cmfnet.io import write_json_atomic

        write_json_atomic(
            Path(cfg.json), {**results, "complete": complete, "written_by": BENCH_WRITER}
        )


def run(args: argparse.Namespace) -> int:
    import torch

    from cmfnet.models import build_model
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
    if cfg.methods:  # what each compared method costs (cmfnet.bench_methods)
        from cmfnet.bench_methods import measure_methods, print_methods

        results = {"methods": measure_methods(cfg, list(args.overrides), device)}
        print_methods(results["methods"], device)
        write_results(cfg, results, complete=True)
        return 0
    if cfg.validation or cfg.datapath_scale:  # a measurement of its own, not the model's
        if cfg.validation:
            results = {"validation": measure_validation(cfg, list(args.overrides))}
            print_validation(results["validation"])
        else:  # the data path at the real split sizes (cmfnet.bench_datapath)
            from cmfnet.bench_datapath import measure_datapath_scale, print_datapath_scale

            results = {"datapath_scale": measure_datapath_scale(cfg)}
            print_datapath_scale(results["datapath_scale"])
        write_results(cfg, results, complete=True)
        return 0
    choices = [o for o in cfg.options if device == "cuda" or "cudnn_benchmark" not in o.split("+")]
    h, w = lowres_size(cfg)
    macs = model_summary(build_model(cfg.model), input_hw=(h, w), scale=cfg.scale).macs
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
            from cmfnet.errors import one_line

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
