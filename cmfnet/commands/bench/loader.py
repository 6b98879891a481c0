"""The configured data set's DataLoader: batches per second for each worker count."""

from __future__ import annotations

import time
from typing import Any

from cmfnet.commands.bench.memory import children_cpu_s


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
    import hydra

    from cmfnet.lit.injections import data_kwargs

    datamodule = hydra.utils.instantiate(cfg.data, **data_kwargs(cfg), fill_cache=False)
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
