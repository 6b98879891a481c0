"""``cmfnet bench datapath_scale=true``: the data path at fastMRI knee's real split sizes.

Writes a few fastMRI-size volume pairs (k-space 640x372 complex64, about 35 slices,
``reconstruction_esc`` 320x320, the ISMRMRD header the loader reads) into a temporary folder of
its own, and measures at each scale:

- the cold per-slice cost: reading both files' slice and degrading it, in one process, no cache;
- filling the cache in this process's memory (as every DDP rank did before the shared cache):
  seconds and CPU ms per slice with ``datapath.workers`` workers, and the bytes it adds to the
  process's private memory per slice;
- filling the shared cache (files every process of the node maps, :mod:`cmfnet.data.slice_cache`):
  the same figures, the files' bytes per slice, and the time a later process takes to map them;
- two ranks of one node setting up at once (two fresh processes), before and after: how many
  slices each degrades, its fill time and its private memory growth.

From the per-slice figures it projects, by arithmetic, the fill time and the memory of the
training and validation splits (``split_pairs`` x ``slices_per_pair`` slices) per training
process and per node for 1, 4 and 8 GPUs (:func:`project`).
"""

from __future__ import annotations

import multiprocessing
import queue
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cmfnet.data.fastmri import FastMRIPairDataset, read_slice
from cmfnet.data.synth_anatomy import column_limits
from cmfnet.data.synth_files import build_ismrmrd_header, write_fastmri_volume
from cmfnet.data.transforms import JointRecSRTransform
from cmfnet.mri.kspace import fft2c
from cmfnet.mri.masks import RandomMaskFunc


def private_bytes() -> int:
    """Memory private to this process and written by it: its own allocations (a cache held in
    its memory), not the clean pages of files it maps (a cache shared through the page cache)."""
    rollup = Path("/proc/self/smaps_rollup").read_text()
    return int(re.search(r"Private_Dirty:\s+(\d+) kB", rollup).group(1)) * 1024


def cpu_s() -> float:
    """CPU seconds of this process and of its finished (joined) children."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def smooth_volume(rng: np.random.Generator, slices: int, size: int) -> np.ndarray:
    """(slices, size, size) complex64 images: a smooth off-centre blob with a phase ramp and
    1% noise per slice (content does not change the costs measured; sizes do)."""
    y, x = np.mgrid[:size, :size] / size - 0.5
    images = np.empty((slices, size, size), dtype=np.complex64)
    for i in range(slices):
        cy, cx, r = rng.uniform(-0.15, 0.15, 2).tolist() + [rng.uniform(0.2, 0.35)]
        blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r**2)) * (np.hypot(y, x) < 0.45)
        noise = 0.01 * (rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size)))
        images[i] = blob * np.exp(1j * rng.uniform(-0.5, 0.5) * x) + noise
    return images


def write_fastmri_size_pairs(
    folder: Path, pairs: int, slices: int, kspace: tuple[int, int], seed: int = 0
) -> Path:
    """Write ``pairs`` PD/PD-FS volume pairs in fastMRI single-coil layout into ``folder``
    (k-space (slices, rows, cols) complex64, HR = rows/2 square) and their pairing CSV beside it;
    returns the CSV's path."""
    rows, cols = kspace
    hr = rows // 2
    maximum, center, _, _ = column_limits(cols)
    header = build_ismrmrd_header(
        hr_size=hr,
        width=cols,
        slices=slices,
        fov_mm=140.0,
        thickness_mm=3.0,
        maximum=maximum,
        center=center,
        tr_ms=2800.0,
        te_ms=30.0,
        protocol="cmfnet bench",
    )
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    lines = []
    for pair in range(pairs):
        names = []
        for acquisition in ("CORPD_FBK", "CORPDFS_FBK"):
            field = np.zeros((slices, rows, cols), dtype=np.complex64)
            top, left = (rows - hr) // 2, (cols - hr) // 2
            field[:, top : top + hr, left : left + hr] = smooth_volume(rng, slices, hr)
            name = f"file{pair}_{acquisition}.h5"
            write_fastmri_volume(
                folder / name, fft2c(field), header, (hr, hr), {"acquisition": acquisition}
            )
            names.append(name)
        lines.append(",".join(names))
    csv = folder.parent / f"{folder.name}_split_less.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def split_dataset(folder: Path, csv: Path, scale: int, cache: bool) -> FastMRIPairDataset:
    """The written pairs as a training split (random masks; the cache is what is measured)."""
    transform = JointRecSRTransform(RandomMaskFunc([0.08], [4]), seed_masks_by_name=False)
    return FastMRIPairDataset(folder, csv, scale=scale, transform=transform, cache_lowres=cache)


def measure_cold(dataset: FastMRIPairDataset) -> dict[str, float]:
    """Per slice, in this process, every slice once: wall ms of ``read_slice`` on both files
    (``read_ms``: HDF5 read, finiteness and spike checks, iFFT to the HR image), and wall and
    CPU ms of reading and degrading it (``cold_ms``, ``cold_cpu_ms``)."""
    start = time.perf_counter()
    for pair_idx, slice_idx in dataset.slices:
        aux, target = dataset.pairs[pair_idx]
        read_slice(target, slice_idx)
        read_slice(aux, slice_idx)
    read_s = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    for index in range(len(dataset)):
        dataset.checked_lowres(index)
    cold_s, cold_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    count = len(dataset)
    return {
        "read_ms_per_slice": 1e3 * read_s / count,
        "cold_ms_per_slice": 1e3 * cold_s / count,
        "cold_cpu_ms_per_slice": 1e3 * cold_cpu_s / count,
    }


def fill_as_rank(folder, csv, scale, cache_dir, workers, barrier, results) -> None:
    """One training process at set-up, in a fresh process (as a DDP rank is): build the split,
    wait for the other ranks, fill the cache (in memory; with ``cache_dir``, the shared files
    there) with ``workers`` workers, and put on ``results``: slices it degraded, wall and CPU
    seconds (its own and its workers'), private bytes it added and the bytes cached."""
    multiprocessing.set_start_method("fork", force=True)  # a rank's own default, not spawn's
    dataset = split_dataset(Path(folder), Path(csv), scale, cache=True)
    barrier.wait()
    memory, cpu, start = private_bytes(), cpu_s(), time.perf_counter()
    filled = (
        dataset.fill_cache(workers)
        if cache_dir is None
        else dataset.fill_shared_cache(cache_dir, workers)
    )
    wall, cpu = time.perf_counter() - start, cpu_s() - cpu
    cached = sum(
        value.nbytes
        for index in range(len(dataset))
        for value in vars(dataset._cache[index]).values()
    )
    results.put(
        {
            "filled": filled,
            "fill_s": wall,
            "cpu_s": cpu,
            "private_bytes": private_bytes() - memory,
            "cached_bytes": cached,
        }
    )


def measure_ranks(folder: Path, csv: Path, scale: int, ranks: int, workers: int, cache_dir):
    """``ranks`` fresh processes setting up at once, as the ranks of one node do: each fills
    the in-memory cache with ``workers`` workers, or (``cache_dir``) the shared one, filled by
    the first with ``workers * ranks`` workers while the others wait. Returns, rank by rank
    (sorted by slices degraded), what :func:`fill_as_rank` reports, and the node's fill
    seconds (the slowest rank) and CPU seconds (all ranks)."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(ranks), context.Queue()
    fill_workers = workers if cache_dir is None else workers * ranks
    processes = [
        context.Process(
            target=fill_as_rank,
            args=(str(folder), str(csv), scale, cache_dir, fill_workers, barrier, results),
        )
        for _ in range(ranks)
    ]
    for process in processes:
        process.start()
    rows: list[dict] = []
    while len(rows) < ranks:
        try:
            rows.append(results.get(timeout=1.0))
        except queue.Empty:
            failed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if failed:
                for process in processes:
                    process.kill()
                raise RuntimeError(f"a simulated rank failed (exit code {failed[0]})") from None
    for process in processes:
        process.join()
    return {
        "fill_workers": fill_workers,
        "ranks": sorted(rows, key=lambda row: row["filled"]),
        "node_fill_s": max(row["fill_s"] for row in rows),
        "node_cpu_s": sum(row["cpu_s"] for row in rows),
    }


def per_slice(one_process: dict, slices: int) -> dict:
    """The per-slice figures of one training process filling ``slices`` slices, before (in
    memory) and after (shared files), from :func:`measure_ranks` with one rank each: fill CPU
    ms per slice, private bytes per slice before, private MB after (a constant: the filler's
    loader and progress bar, not slices) and cached bytes per slice."""
    before, after = one_process["in_memory"]["ranks"][0], one_process["shared"]["ranks"][0]
    return {
        "before_fill_cpu_ms_per_slice": 1e3 * before["cpu_s"] / slices,
        "before_private_bytes_per_slice": before["private_bytes"] / slices,
        "after_fill_cpu_ms_per_slice": 1e3 * after["cpu_s"] / slices,
        "after_private_mb": after["private_bytes"] / 2**20,
        "cached_bytes_per_slice": after["cached_bytes"] / slices,
    }


def project(
    figures: dict, split_slices: dict[str, int], gpus: list[int], gpu_workers: int
) -> list[dict]:
    """Fill time and memory of each split for ``gpus`` ranks of one node, before (every rank
    fills and holds its own cache) and after (one shared copy), by arithmetic from
    :func:`per_slice`'s figures: fill time = slices x fill CPU ms per slice / fill workers,
    assuming a free core for each (before: ``gpu_workers`` per rank, every rank filling at once;
    after: ``gpu_workers`` x ranks for the one fill, while the other ranks wait); memory per
    process = slices x private bytes per slice before, the measured constant after; per node =
    ranks x that before, one copy of the cached bytes (the page cache) after.
    """
    rows = []
    for split, slices in split_slices.items():
        before_gb = slices * figures["before_private_bytes_per_slice"] / 1e9
        for ranks in gpus:
            rows.append(
                {
                    "split": split,
                    "slices": slices,
                    "gpus": ranks,
                    "before_fill_s": slices
                    * figures["before_fill_cpu_ms_per_slice"]
                    / gpu_workers
                    / 1e3,
                    "before_node_cpu_s": ranks
                    * slices
                    * figures["before_fill_cpu_ms_per_slice"]
                    / 1e3,
                    "before_gb_per_process": before_gb,
                    "before_gb_per_node": ranks * before_gb,
                    "after_fill_s": slices
                    * figures["after_fill_cpu_ms_per_slice"]
                    / (gpu_workers * ranks)
                    / 1e3,
                    "after_node_cpu_s": slices * figures["after_fill_cpu_ms_per_slice"] / 1e3,
                    "after_private_gb_per_process": figures["after_private_mb"] * 2**20 / 1e9,
                    "after_gb_per_node": slices * figures["cached_bytes_per_slice"] / 1e9,
                }
            )
    return rows


def check_datapath_settings(settings) -> None:
    """Refuse counts that are not positive integers, a k-space whose HR size (rows/2) a scale
    does not divide or that is wider than the k-space, before anything is written."""
    from cmfnet.runs.config import is_int

    counts = [
        ("pairs", settings.pairs),
        ("slices", settings.slices),
        ("workers", settings.workers),
        ("slices_per_pair", settings.slices_per_pair),
        ("gpu_workers", settings.gpu_workers),
        *(("kspace", value) for value in settings.kspace),
        *(("scales", value) for value in settings.scales),
        *(("gpus", value) for value in settings.gpus),
        *((f"split_pairs.{k}", v) for k, v in settings.split_pairs.items()),
    ]
    for key, value in counts:
        if not is_int(value) or value < 1:
            raise ValueError(f"datapath.{key} must hold integers >= 1, got {value!r}")
    rows, cols = settings.kspace
    if rows % 2 or rows // 2 > cols or any((rows // 2) % scale for scale in settings.scales):
        raise ValueError(
            f"datapath.kspace {list(settings.kspace)}: the HR size rows/2 must be whole, fit "
            f"in the columns and be divisible by every scale {list(settings.scales)}"
        )


def measure_datapath_scale(cfg) -> dict[str, Any]:
    """Every figure of the module's description, for ``cfg.datapath``, as one JSON-able dict."""
    import torch

    settings = cfg.datapath
    check_datapath_settings(settings)
    split_slices = {
        split: int(pairs) * int(settings.slices_per_pair)
        for split, pairs in settings.split_pairs.items()
    }
    results: dict[str, Any] = {
        "kspace": list(settings.kspace),
        "pairs_written": int(settings.pairs),
        "slices_per_volume": int(settings.slices),
        "workers": int(settings.workers),
        "cpu_threads": torch.get_num_threads(),
        "split_slices_assumed": split_slices,
        "scales": {},
    }
    with tempfile.TemporaryDirectory(prefix="cmfnet-bench-datapath-") as tmp:
        folder = Path(tmp) / "singlecoil_train"
        csv = write_fastmri_size_pairs(
            folder, int(settings.pairs), int(settings.slices), tuple(settings.kspace)
        )
        workers, slices = int(settings.workers), int(settings.pairs) * int(settings.slices)
        for scale in map(int, settings.scales):
            caches = Path(tmp) / f"caches_x{scale}"
            measured: dict[str, Any] = {
                **measure_cold(split_dataset(folder, csv, scale, cache=False)),
                **{
                    name: {
                        "in_memory": measure_ranks(folder, csv, scale, ranks, workers, None),
                        "shared": measure_ranks(folder, csv, scale, ranks, workers, caches / name),
                    }
                    for name, ranks in (("one_process", 1), ("two_ranks", 2))
                },
            }
            again = split_dataset(folder, csv, scale, cache=True)
            start = time.perf_counter()
            again.fill_shared_cache(caches / "one_process", workers)
            measured["shared_mapped_again_s"] = time.perf_counter() - start
            measured["files_bytes_per_slice"] = (
                sum(path.stat().st_size for path in again._cache.folder.glob("*.npy")) / slices
            )
            measured["per_slice"] = per_slice(measured["one_process"], slices)
            measured["projection"] = project(
                measured["per_slice"], split_slices, list(settings.gpus), int(settings.gpu_workers)
            )
            results["scales"][f"x{scale}"] = measured
    return results


def print_datapath_scale(results: dict) -> None:
    """The figures as lines and one projection table per scale."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    console.print(
        f"data path at the real split sizes: k-space {results['kspace']}, "
        f"{results['pairs_written']} pairs x {results['slices_per_volume']} slices written, "
        f"{results['workers']} fill workers; projected splits "
        f"{results['split_slices_assumed']} slices"
    )
    for scale, m in results["scales"].items():
        figures = m["per_slice"]
        lines = [
            f"{scale}: cold {m['cold_ms_per_slice']:.1f} ms/slice "
            f"(read {m['read_ms_per_slice']:.1f}, CPU {m['cold_cpu_ms_per_slice']:.1f}); "
            f"{figures['cached_bytes_per_slice'] / 1e3:.0f} kB cached/slice, "
            f"{m['files_bytes_per_slice'] / 1e3:.0f} kB on disk/slice, shared files mapped again "
            f"in {m['shared_mapped_again_s'] * 1e3:.0f} ms"
        ]
        for name in ("one_process", "two_ranks"):
            for cache in ("in_memory", "shared"):
                run = m[name][cache]
                ranks = run["ranks"]
                lines.append(
                    f"  {name.replace('_', ' ')}, {cache.replace('_', ' ')} "
                    f"({run['fill_workers']} fill workers): node fill {run['node_fill_s']:.2f} s, "
                    f"{run['node_cpu_s']:.2f} CPU s; slices degraded "
                    f"{[rank['filled'] for rank in ranks]}, private MB "
                    f"{[round(rank['private_bytes'] / 2**20, 1) for rank in ranks]}"
                )
        console.print("\n".join(lines))
        table = Table(title=f"{scale}: projected per node (fill s; GB)")
        for column in (
            "split",
            "slices",
            "GPUs",
            "fill s before",
            "after",
            "GB/process before",
            "after (private)",
            "GB/node before",
            "after",
        ):
            table.add_column(column, justify="right")
        for row in m["projection"]:
            table.add_row(
                row["split"],
                str(row["slices"]),
                str(row["gpus"]),
                f"{row['before_fill_s']:.1f}",
                f"{row['after_fill_s']:.1f}",
                f"{row['before_gb_per_process']:.2f}",
                f"{row['after_private_gb_per_process']:.3f}",
                f"{row['before_gb_per_node']:.2f}",
                f"{row['after_gb_per_node']:.2f}",
            )
        console.print(table)
