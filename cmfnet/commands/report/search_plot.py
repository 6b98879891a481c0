"""The trials of a hyperparameter search (``hparams_search``) as one PNG: the objective against
the trial number, and against each searched parameter.

A search folder holds its Optuna study in ``optuna.db`` (``hydra.sweeper.storage``); ``cmfnet
report`` calls :func:`write_search_plots` on the folders it reads. Only completed trials have a
value; failed and stopped ones are counted in the title.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullFormatter  # noqa: E402

from cmfnet.runs.io import atomic_path  # noqa: E402

#: the study's SQLite file in a search folder (conf/hparams_search/)
STUDY_FILE = "optuna.db"
DPI = 120


@dataclass(frozen=True)
class Trial:
    number: int
    state: str
    value: float | None
    params: dict[str, Any]


@dataclass(frozen=True)
class Study:
    name: str
    direction: str
    trials: list[Trial]
    log_params: frozenset[str]  # parameters searched on a log scale


def read_studies(sweep_dir: Path) -> list[Study]:
    """Every Optuna study in ``<sweep_dir>/optuna.db`` (none when the folder has no such file)."""
    path = Path(sweep_dir) / STUDY_FILE
    if not path.is_file():
        return []
    import optuna
    from optuna.distributions import IntLogUniformDistribution, LogUniformDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{path.resolve()}"
    studies = []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = [
            Trial(t.number, t.state.name, t.value, dict(t.params))
            for t in study.get_trials(deepcopy=False)
        ]
        log_params = {
            name
            for t in study.get_trials(deepcopy=False)
            for name, dist in t.distributions.items()
            if isinstance(dist, (LogUniformDistribution, IntLogUniformDistribution))
        }
        direction = study.direction.name.lower()
        studies.append(Study(summary.study_name, direction, trials, frozenset(log_params)))
    return studies


def plot_trials(study: Study, path: Path) -> None:
    """One panel of the objective per trial number, then one per searched parameter; the best
    trial so far is drawn as a line in the first."""
    done = [t for t in study.trials if t.state == "COMPLETE" and t.value is not None]
    params = sorted({name for t in study.trials for name in t.params})
    fig, axes = plt.subplots(
        1, 1 + len(params), figsize=(4.2 * (1 + len(params)), 3.6), squeeze=False
    )
    first = axes[0, 0]
    first.plot([t.number for t in done], [t.value for t in done], "o", color="tab:blue")
    best, running = [], None
    pick = max if study.direction == "maximize" else min
    for t in done:
        running = t.value if running is None else pick(running, t.value)
        best.append(running)
    first.step([t.number for t in done], best, where="post", color="tab:orange", label="best")
    first.set_xlabel("trial")
    first.xaxis.set_major_locator(MaxNLocator(integer=True))
    first.set_ylabel("objective (best validation SR PSNR, dB)")
    if done:
        first.legend(loc="lower right", fontsize="small")
    for ax, name in zip(axes[0, 1:], params):
        points = [(t.params[name], t.value) for t in done if name in t.params]
        values = [p[0] for p in points]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            ax.plot(values, [p[1] for p in points], "o", color="tab:blue")
            if name in study.log_params:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # labels on decades only
        else:  # a categorical parameter: one column per choice
            labels = sorted({str(v) for v in values})
            ax.plot([labels.index(str(v)) for v in values], [p[1] for p in points], "o")
            ax.set_xticks(range(len(labels)), labels)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.set_xlabel(name)
    others = len(study.trials) - len(done)
    fig.suptitle(
        f"study {study.name}: {len(done)} completed trials"
        + (f", {others} failed or not finished" if others else "")
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)


def write_search_plots(sweep_dirs: Sequence[Path], out: Path) -> list[str]:
    """``search_<study>.png`` in ``out`` for each study of the search folders among
    ``sweep_dirs``; returns the file names written."""
    names = []
    for sweep_dir in sweep_dirs:
        for study in read_studies(sweep_dir):
            name = f"search_{study.name}.png"
            plot_trials(study, Path(out) / name)
            names.append(name)
    return names
