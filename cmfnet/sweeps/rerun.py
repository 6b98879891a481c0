"""Re-running one job: the command line that re-runs it into its own folder, the record of a job a
signal stopped, and the continuation of a requeued job.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import DictConfig

from cmfnet.runs import signals

log = logging.getLogger(__name__)


def _hydra_quoted(value: str) -> str:
    """A value in Hydra's override grammar as a quoted string (job folder names hold '='
    and ',')."""
    return "'" + value.replace("'", "\\'") + "'"


def rerun_overrides(
    job_dir: Path, recorded: Optional[Sequence[str]] = None, resume: bool = True
) -> list[str]:
    """Overrides for ``python run.py`` that re-run one job of a sweep alone, into its own folder.

    The job's recorded overrides (``.hydra/overrides.yaml``, including ``sweeps=NAME`` whose
    recipe settings still apply; ``recorded`` gives them for a job the sweep never started) plus
    ``hydra.mode=RUN`` (a named sweep would otherwise start the whole multirun again),
    ``hydra.run.dir=<job_dir>`` and, when ``resume`` and the job left
    ``checkpoints/last.ckpt``, ``ckpt_path=last`` to resume from it.
    """
    job_dir = Path(job_dir)
    if recorded is None:
        import yaml

        path = job_dir / ".hydra" / "overrides.yaml"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no record of the job's overrides (is {job_dir} a sweep job folder?)"
            )
        recorded = yaml.safe_load(path.read_text()) or []
    replaced = ("ckpt_path", "hydra.mode", "hydra.run.dir")
    overrides = [str(o) for o in recorded if str(o).split("=", 1)[0].lstrip("+~") not in replaced]
    overrides += ["hydra.mode=RUN", f"hydra.run.dir={_hydra_quoted(str(job_dir.resolve()))}"]
    if resume and (job_dir / "checkpoints" / "last.ckpt").is_file():
        overrides.append("ckpt_path=last")
    return overrides


def _shell_quoted(arg: str) -> str:
    """``arg`` for a POSIX shell; Hydra's quoted values go in double quotes, which read better."""
    if "'" in arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def shell_line(args: Sequence[str]) -> str:
    """``args`` as one line for a POSIX shell."""
    return " ".join(_shell_quoted(arg) for arg in args)


def rerun_command(job_dir: Path, run_py: str = "run.py") -> str:
    """The shell line that re-runs a killed or failed job (see :func:`rerun_overrides`); run it
    from the repository root, then :func:`write_results` on the sweep folder."""
    return shell_line(["python", run_py, *rerun_overrides(job_dir)])


def interrupted_record(out: Path, stop: BaseException, overrides: Sequence[str]) -> dict:
    """metrics.json of the job in folder ``out`` that the signal of ``stop`` (or the last one
    received) interrupted: the checkpoint it can continue from and the job's ``overrides`` (a
    requeued job recognises its own record by them)."""
    import signal

    name = signals.signal_name(getattr(stop, "signum", None) or signals.received() or signal.SIGINT)
    last = out / "checkpoints" / "last.ckpt"
    checkpoint = str(last.relative_to(out)) if last.is_file() else None
    where = (
        f"last epoch-end checkpoint: {checkpoint}" if checkpoint else "before its first checkpoint"
    )
    return {
        "status": "interrupted",
        "error": f"stopped by {name} ({where})",
        "signal": name,
        "checkpoint": checkpoint,
        "overrides": list(overrides),
    }


def resume_requeued_job(cfg: DictConfig, out: Path, overrides: Sequence[str]) -> None:
    """Set ``ckpt_path=last`` for a submitit job requeued after a time-out, pre-emption or node
    failure, so that it continues from its own ``checkpoints/last.ckpt``: only inside a submitit
    job, with no ckpt_path given, when the metrics.json in ``out`` records this very job (the
    same ``overrides``) as interrupted, or, for a job SLURM restarted (``SLURM_RESTART_COUNT``
    above 0: requeued, also after a node failure that left no record), when there is no
    metrics.json. A fresh run never picks up a checkpoint on its own."""
    if cfg.get("ckpt_path") not in (None, "") or "SUBMITIT_FOLDER" not in os.environ:
        return
    last = out / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return
    try:
        record = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        record = None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return
    restarted = os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0")
    if record is None and restarted:
        log.info("job restarted by SLURM without a record: continuing from %s", last)
    elif not (
        isinstance(record, dict)
        and record.get("status") == "interrupted"
        and record.get("overrides") == list(overrides)
    ):
        return
    else:
        log.info("requeued job: continuing from %s", last)
    cfg.ckpt_path = "last"
