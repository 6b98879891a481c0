"""``launcher=slurm``: Hydra's submitit SLURM launcher, waiting on SLURM's own word.

Jobs are submitted as by ``hydra_submitit_launcher`` (one array job); their SLURM ids go into
the sweep folder (:func:`cmfnet.runs.slurm.record_job_ids`). The launching process then asks
``squeue`` every ``poll_interval_s`` which jobs SLURM still holds, and logs each change once
(a job requeued after a pre-emption or its time limit is shown pending again, with its id). A
job is over only when SLURM no longer holds it: a result its earlier run left (an error
raised while SLURM was stopping it) does not end it. Its result, or its absence, is logged in
one line, and never stops the sweep: each job's metrics.json tells the results tables what
happened. ``sacct`` is never asked (clusters without accounting answer it with an error).
"""

import logging
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

from cmfnet.runs.config import shown_overrides
from cmfnet.runs.slurm import held_jobs, record_job_ids

log = logging.getLogger(__name__)


@dataclass
class CmfnetSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.cmfnet_launchers.slurm_launcher.CmfnetSlurmLauncher"
    # Seconds between two squeue calls while the launching process waits for its jobs.
    poll_interval_s: float = 10.0
    # Seconds a job must stay out of squeue, with no result file, before it counts as ended: a
    # job that submitit requeues can drop out of squeue for a moment between its run's end and
    # its requeue (squeue does not list the REQUEUED state).
    settle_s: float = 30.0


ConfigStore.instance().store(
    group="hydra/launcher", name="cmfnet_slurm", node=CmfnetSlurmConf, provider="cmfnet"
)

OWN_PARAMS = ("poll_interval_s", "settle_s")


class CmfnetSlurmLauncher(SlurmLauncher):
    """:class:`SlurmLauncher` that waits on ``squeue`` and reports each job's SLURM state."""

    def __init__(self, **params: Any) -> None:
        self.poll_interval_s = float(params.pop("poll_interval_s"))
        if self.poll_interval_s <= 0:
            raise ValueError(
                f"hydra.launcher.poll_interval_s must be > 0, got {self.poll_interval_s}"
            )
        self.settle_s = float(params.pop("settle_s"))
        if self.settle_s < 0:
            raise ValueError(f"hydra.launcher.settle_s must be >= 0, got {self.settle_s}")
        super().__init__(**params)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        import submitit
        from hydra.core.singleton import Singleton

        assert self.config is not None
        executor = submitit.AutoExecutor(
            folder=self.params["submitit_folder"],
            cluster=self._EXECUTOR,
            slurm_max_num_timeout=self.params["max_num_timeout"],
        )
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                key if key in shared else f"{self._EXECUTOR}_{key}": value
                for key, value in self.params.items()
                if key not in ("submitit_folder", "max_num_timeout")
            }
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("SLURM sweep folder: %s", sweep_dir)
        numbers = [initial_job_idx + i for i in range(len(job_overrides))]
        arguments = [
            (list(overrides), "hydra.sweep.dir", num, f"job_id_for_{num}", Singleton.get_state())
            for num, overrides in zip(numbers, job_overrides)
        ]
        jobs = executor.map_array(self, *zip(*arguments))
        record_job_ids(sweep_dir, {num: job.job_id for num, job in zip(numbers, jobs)})
        for num, overrides, job in zip(numbers, job_overrides, jobs):
            log.info("\t#%d: SLURM job %s: %s", num, job.job_id, shown_overrides(overrides))
        return self.wait(jobs, numbers)

    def wait(self, jobs: List[Any], numbers: List[int]) -> List[JobReturn]:
        """Wait until SLURM holds none of ``jobs``; log each state change; the jobs' returns."""
        returns: Dict[str, JobReturn] = {}
        seen: Dict[str, Any] = {}
        gone_since: Dict[str, float] = {}
        squeue_failed = False
        while len(returns) < len(jobs):
            held = held_jobs(job.job_id for job in jobs if job.job_id not in returns)
            if held is None and not squeue_failed:
                squeue_failed = True
                log.warning("squeue failed: waiting for the jobs' result files instead")
            for num, job in zip(numbers, jobs):
                if job.job_id in returns:
                    continue
                state = None if held is None else held.get(job.job_id)
                if state is not None:
                    gone_since.pop(job.job_id, None)
                    if state[1:] != seen.get(job.job_id):
                        seen[job.job_id] = state[1:]
                        log.info("job #%d: %s", num, state.describe())
                elif job.paths.result_pickle.exists() or (
                    held is not None
                    and time.monotonic() - gone_since.setdefault(job.job_id, time.monotonic())
                    >= self.settle_s
                ):
                    returns[job.job_id] = job_return(num, job)
            if len(returns) < len(jobs):
                time.sleep(self.poll_interval_s)
        return [returns[job.job_id] for job in jobs]


def job_return(num: int, job) -> JobReturn:
    """The return of a job SLURM no longer holds, read from its result file; a job that left
    none (killed, cancelled, stopped by a signal) or raised gets an empty return and one line:
    its metrics.json is what the results tables read."""
    path = job.paths.result_pickle
    try:
        with open(path, "rb") as file:
            outcome, result = pickle.load(file)
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as err:
        log.warning("job #%d: SLURM job %s ended without a result (%s)", num, job.job_id, err)
        return empty_return()
    if outcome == "success" and isinstance(result, JobReturn):
        if result.status != JobStatus.FAILED:
            log.info("job #%d: SLURM job %s ended", num, job.job_id)
            return result
        result = result._return_value  # the error the job raised (the sweeper would raise it)
    last = str(result).strip().splitlines()[-1:] or ["?"]
    log.warning("job #%d: SLURM job %s ended with an error: %s", num, job.job_id, last[0])
    return empty_return()


def empty_return() -> JobReturn:
    """A return that the sweeper accepts; the job's own record says what happened to it."""
    ret = JobReturn()
    ret.status = JobStatus.COMPLETED
    ret.return_value = None
    return ret
