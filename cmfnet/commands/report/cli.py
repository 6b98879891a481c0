"""``cmfnet report``: its options, the output folder, and building a report from sweep folders."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional, Sequence

from cmfnet.commands.report.figures import write_figures
from cmfnet.commands.report.load import load_report
from cmfnet.commands.report.markdown import report_markdown
from cmfnet.commands.report.paired import (
    PAIRED_COLUMNS,
    pair_with_reference,
    paired_long_rows,
    reference_method,
)
from cmfnet.commands.report.records import BOOTSTRAP_SEED, PAPER_NAMES, REFERENCE, RESAMPLES
from cmfnet.commands.report.stats import all_stats
from cmfnet.commands.report.tables import long_rows, report_csv
from cmfnet.commands.report.upload import log_to_wandb


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sweep_dirs",
        nargs="+",
        type=Path,
        metavar="SWEEP_DIR",
        help="multirun/<sweep>/<timestamp> folder(s); several are merged (later ones win)",
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="output folder (default: the first SWEEP_DIR)"
    )
    parser.add_argument(
        "--name",
        default="report",
        metavar="NAME",
        help="base name of the tables: NAME.md, NAME.csv and NAME_paired.csv (default: report)",
    )
    parser.add_argument(
        "--reference",
        metavar="METHOD",
        help="the method every other is paired with: its name in the tables or its model config "
        f"(default: {REFERENCE}, i.e. {PAPER_NAMES[REFERENCE]})",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=RESAMPLES,
        metavar="N",
        help=f"bootstrap resamples of the paired intervals (default: {RESAMPLES})",
    )
    parser.add_argument(
        "--bootstrap-seed",
        type=int,
        default=BOOTSTRAP_SEED,
        metavar="SEED",
        help=f"seed of the bootstrap resampling (default: {BOOTSTRAP_SEED})",
    )
    parser.add_argument(
        "--wandb",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log the tables and figures into a new W&B run (offline unless WANDB_MODE is set)",
    )
    parser.add_argument(
        "--wandb-project", default="cmfnet", metavar="NAME", help="W&B project (cmfnet)"
    )
    parser.add_argument(
        "--scoring",
        metavar="NAME",
        help="tables in this scoring (conf/scoring/): each run's own if it was scored so, else "
        "the one its test also computed (module.also_score); default: each run's own",
    )


def claim_report_folder(out: Path) -> Path:
    """``out`` claimed for a report: new, empty, a report folder or a sweep folder (a sweep run
    before cmfnet marked its folders is recognised by Hydra's ``multirun.yaml``)."""
    from cmfnet.runs.ownership import claim_folder, mark_earlier_folder

    mark_earlier_folder(out, "sweep", lambda folder: (folder / "multirun.yaml").is_file())
    return claim_folder(out, "report", setting="--out", accept=("sweep",))


def build_report(
    sweep_dirs: Sequence[Path],
    out: Path,
    use_wandb: bool = False,
    wandb_project: str = "cmfnet",
    name: str = "report",
    scoring: Optional[str] = None,
    reference: Optional[str] = None,
    resamples: int = RESAMPLES,
    bootstrap_seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """Write ``<name>.md``, ``<name>.csv``, ``<name>_paired.csv`` and the figures into ``out``
    (and the W&B run if asked); returns ``{"report", "markdown", "csv", "paired_csv", "figures",
    "wandb_run"}`` paths/objects. ``reference`` (a method or model config name, see
    :func:`reference_method`) None: :data:`REFERENCE`, and no comparison when the sweeps have
    none; a ``reference`` given that the sweeps lack is refused."""
    from cmfnet.commands.report.search_plot import write_search_plots
    from cmfnet.runs.io import write_text_atomic

    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"--name {name!r}: expected a plain file name such as 'report'")
    if resamples < 1:
        raise ValueError(f"--bootstrap must be at least 1 resample, got {resamples}")
    report = load_report(sweep_dirs, scoring)
    compared_with = reference_method(report, reference or REFERENCE)
    if reference is not None and not report.has_method(compared_with):
        raise ValueError(
            f"--reference {reference!r}: no such method or model in these sweeps "
            f"(methods: {', '.join(report.methods) or 'none'})"
        )
    out = claim_report_folder(Path(out))
    stats = all_stats(report)
    pairing = pair_with_reference(report, stats, compared_with, resamples, bootstrap_seed)
    figures, figure_notes = write_figures(report, stats, out)
    figures += write_search_plots(sweep_dirs, out)  # a hyperparameter search's trials
    markdown, table = out / f"{name}.md", out / f"{name}.csv"
    paired_table = out / f"{name}_paired.csv"
    write_text_atomic(markdown, report_markdown(report, stats, pairing, figures, figure_notes))
    write_text_atomic(table, report_csv(long_rows(report, stats)))
    write_text_atomic(paired_table, report_csv(paired_long_rows(report, pairing), PAIRED_COLUMNS))
    wandb_run = (
        log_to_wandb(report, stats, pairing, out, figures, wandb_project) if use_wandb else None
    )
    return {
        "report": report,
        "markdown": markdown,
        "csv": table,
        "paired_csv": paired_table,
        "figures": [out / figure for figure in figures],
        "wandb_run": wandb_run,
    }


def run(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else args.sweep_dirs[0]
    written = build_report(
        args.sweep_dirs,
        out,
        use_wandb=args.wandb,
        wandb_project=args.wandb_project,
        name=args.name,
        scoring=args.scoring,
        reference=args.reference,
        resamples=args.bootstrap,
        bootstrap_seed=args.bootstrap_seed,
    )
    report = written["report"]
    print(
        f"{len(report.runs)} completed runs, {len(report.failures)} failed jobs "
        f"-> {written['markdown']}, "
        f"{written['csv'].name}, {written['paired_csv'].name}, "
        f"{len(written['figures'])} figures"
    )
    if written["wandb_run"] is not None:
        print(f"W&B run: {written['wandb_run']}")
    return 0
