"""Peak memory of a measurement: resident memory sampled in a thread, the process's own resident
peak, and CUDA's allocator peak.
"""

from __future__ import annotations

import os
import threading
import time


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


def children_cpu_s() -> float:
    """User + system CPU seconds of this process's finished (joined) child processes."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
