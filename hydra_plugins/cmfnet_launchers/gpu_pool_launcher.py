"""``launcher=gpus``: run a sweep's jobs in parallel on one machine, one job per GPU.

A pool of worker processes (spawned, so CUDA is initialised only inside them) claims one
device each and sets ``CUDA_VISIBLE_DEVICES`` to it before anything imports CUDA; jobs are
handed to whichever worker is free, so as many jobs run at once as there are devices. With no
GPU (or ``devices: cpu``), ``cpu_workers`` jobs run side by side on the CPU. Workers exit on
their own when the launching process dies.

SIGINT or SIGTERM stops the sweep (:mod:`cmfnet.runs.signals`): the launching process cancels the
jobs not begun and passes the signal on to every worker; each job in progress records itself as
interrupted and its worker exits; a worker still running after ``stop_timeout_s`` is killed.
The launching process then exits with 128 + the signal number.
"""

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import cloudpickle
from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from cmfnet.runs import signals
from cmfnet.runs.config import shown_overrides

log = logging.getLogger(__name__)


@dataclass
class GPUPoolLauncherConf:
    _target_: str = "hydra_plugins.cmfnet_launchers.gpu_pool_launcher.GPUPoolLauncher"
    # GPU ids to use, e.g. [0, 1, 2, 3]; null = every GPU torch sees; "cpu" = run on the CPU.
    devices: Any = None
    # Parallel jobs when running on the CPU.
    cpu_workers: int = 2
    # Environment variables set in every worker (e.g. OMP_NUM_THREADS).
    env: dict = field(default_factory=dict)
    # Seconds a stopping sweep waits for each worker to record its job as interrupted before
    # killing it.
    stop_timeout_s: float = 30.0


ConfigStore.instance().store(
    group="hydra/launcher", name="cmfnet_gpus", node=GPUPoolLauncherConf, provider="cmfnet"
)

_DEVICE: Optional[str] = None


def resolve_devices(devices: Any, cpu_workers: int) -> list[str]:
    """Device slots: GPU ids as strings, or ``cpu_workers`` copies of ``"cpu"``."""
    if devices is None:
        import torch

        count = torch.cuda.device_count()
        devices = list(range(count)) if count else "cpu"
    if devices == "cpu":
        if cpu_workers < 1:
            raise ValueError(f"hydra.launcher.cpu_workers must be >= 1, got {cpu_workers}")
        return ["cpu"] * cpu_workers
    slots = [str(d) for d in devices]
    if not slots:
        raise ValueError("hydra.launcher.devices is empty")
    return slots


def exit_when_orphaned(parent_pid: int, poll_s: float = 1.0) -> threading.Thread:
    """Start a daemon thread that ends this process (exit code 1) once its parent is gone, so a
    sweep whose launcher is killed (SIGTERM, SIGKILL) leaves no worker training on."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)

    thread = threading.Thread(target=watch, name="exit-when-orphaned", daemon=True)
    thread.start()
    return thread


def _claim_device(queue, env: dict, parent_pid: int) -> None:
    global _DEVICE
    exit_when_orphaned(parent_pid)
    signals.install()  # an idle worker exits on SIGINT/SIGTERM; a busy one records its job first
    _DEVICE = queue.get()
    os.environ.update({k: str(v) for k, v in env.items()})
    os.environ["CUDA_VISIBLE_DEVICES"] = "" if _DEVICE == "cpu" else _DEVICE
    if "OMP_NUM_THREADS" in env:  # torch may already be imported by the spawned main module
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))


def _exit_worker(code: int) -> None:
    """End this worker at once (it must not take the next job queued for it), logs flushed."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _run_in_worker(payload: bytes, overrides: list[str], job_num: int) -> JobReturn:
    try:
        hydra_context, config, task_function, singleton_state = cloudpickle.loads(payload)
        Singleton.set_state(singleton_state)
        setup_globals()
        sweep_config = hydra_context.config_loader.load_sweep_config(config, overrides)
        with open_dict(sweep_config.hydra.job) as job:
            job.id = f"{job.name}_{job_num}"
            job.num = job_num
        log.info("job #%d on device %s: %s", job_num, _DEVICE, shown_overrides(overrides))
        result = run_job(
            hydra_context=hydra_context,
            task_function=task_function,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    except BaseException as err:  # after a stop signal the job has recorded itself: the worker ends
        signum = signals.received()
        if signum is None:
            raise
        code = (
            err.code if isinstance(err, SystemExit) and isinstance(err.code, int) else 128 + signum
        )
        _exit_worker(code)
    result.hydra_cfg = None  # keep the returned object small and picklable
    return result


def stop_workers(pool: ProcessPoolExecutor, signum: int, timeout_s: float) -> list[int]:
    """End the pool of a stopping sweep: cancel the jobs not begun, pass ``signum`` on to every
    worker, wait up to ``timeout_s`` for them to exit and kill the rest. Returns their exit
    codes."""
    workers = []
    for _ in range(10):  # the pool's own thread may change the dict meanwhile
        with contextlib.suppress(RuntimeError):
            workers = list((getattr(pool, "_processes", None) or {}).values())
            break
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        if worker.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signum)
    deadline = time.monotonic() + timeout_s
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    for worker in workers:
        if worker.is_alive():
            log.warning("worker %d did not stop within %g s; killing it", worker.pid, timeout_s)
            worker.kill()
            worker.join(5)
    return [worker.exitcode for worker in workers if worker.exitcode is not None]


class GPUPoolLauncher(Launcher):
    def __init__(
        self,
        devices: Any = None,
        cpu_workers: int = 2,
        env: Optional[dict] = None,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.devices = devices
        self.cpu_workers = cpu_workers
        self.env = dict(env or {})
        self.stop_timeout_s = float(stop_timeout_s)
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        assert self.config is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        slots = resolve_devices(self.devices, self.cpu_workers)
        log.info(
            "GPU pool launcher: %d jobs on %d slot(s) %s", len(job_overrides), len(slots), slots
        )
        payload = cloudpickle.dumps(
            (self.hydra_context, self.config, self.task_function, Singleton.get_state())
        )
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        for slot in slots:
            queue.put(slot)
        with signals.stop_on_signals():
            pool = ProcessPoolExecutor(
                max_workers=len(slots),
                mp_context=context,
                initializer=_claim_device,
                initargs=(queue, self.env, os.getpid()),
            )
            try:
                futures = [
                    pool.submit(_run_in_worker, payload, list(overrides), initial_job_idx + i)
                    for i, overrides in enumerate(job_overrides)
                ]
                results = [future.result() for future in futures]
            except BaseException as err:  # a stop signal here or in a worker, or a worker that died
                codes = stop_workers(
                    pool, signals.received() or signal.SIGTERM, self.stop_timeout_s
                )
                # A worker alone got a stop signal: it exited with 130 or 143, and none crashed.
                stopped = [c - 128 for c in codes if c - 128 in signals.STOP_SIGNALS]
                crashed = any(c != 0 and c - 128 not in signals.STOP_SIGNALS for c in codes)
                signum = signals.received() or (stopped[0] if stopped and not crashed else None)
                if signum is not None and not isinstance(err, signals.Interrupted):
                    raise signals.Interrupted(signum) from None
                raise
            pool.shutdown()
            return results
