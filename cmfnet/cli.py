"""The ``cmfnet`` command line: ``cmfnet <subcommand> [options]``.

Subcommands live in :data:`COMMANDS`, a dict ``name -> Command(help, add_arguments, run)``:
``add_arguments(parser)`` declares the options, ``run(args) -> int`` does the work and returns
the exit status. Heavy imports belong inside ``run`` so that ``cmfnet --help`` stays fast.
To add a subcommand, define the two functions and call :func:`register` (or add an entry to
``COMMANDS``) below.

An error raised by ``run`` (a bad setting or path) is printed as one line,
``cmfnet <subcommand>: error: ...`` (:func:`cmfnet.runs.errors.one_line`), and gives exit status 2,
like argparse's own errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from cmfnet.runs.errors import one_line


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def register(
    name: str,
    help: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
) -> None:
    """Add (or replace) a subcommand."""
    COMMANDS[name] = Command(help=help, add_arguments=add_arguments, run=run)


# --------------------------------------------------------------------------------------------
# synth
# --------------------------------------------------------------------------------------------


def _synth_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder (created; singlecoil_{train,val,test}/ and CSVs inside)",
    )
    parser.add_argument("--train", type=int, default=20, metavar="N", help="training pairs (20)")
    parser.add_argument("--val", type=int, default=5, metavar="N", help="validation pairs (5)")
    parser.add_argument("--test", type=int, default=5, metavar="N", help="test pairs (5)")
    parser.add_argument(
        "--slices", type=int, default=8, metavar="S", help="consecutive axial slices per volume (8)"
    )
    parser.add_argument(
        "--hr-size",
        type=int,
        default=320,
        metavar="H",
        help="reconstruction size H (kspace has 2H readout rows) (320)",
    )
    parser.add_argument(
        "--width",
        type=int,
        default=368,
        metavar="W",
        help="phase-encode columns W of the kspace, H <= W <= 4H (368)",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="K", help="random seed (0)")
    parser.add_argument(
        "--source",
        choices=("mni", "phantom"),
        default="mni",
        help="anatomy: MNI152 tissue maps bundled with nilearn, or an ellipse phantom (mni)",
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=0.02,
        metavar="SIGMA",
        help="k-space noise sd relative to the mean PD brain signal (0.02)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--preview",
        action="store_true",
        help="also draw DIR/preview.png: the middle slice of each split's first pair",
    )


def _synth_preview(out, counts: dict[str, int]) -> None:
    """Draw the middle slice of the first pair of each non-empty split into ``out/preview.png``."""
    from cmfnet.data.fastmri import read_slice, read_volume_info
    from cmfnet.data.pairs_csv import read_pairs_csv
    from cmfnet.mri.figures import plot_synthetic_preview

    rows = []
    for split, count in counts.items():
        if not count:
            continue
        images = []
        for name in read_pairs_csv(out / f"singlecoil_{split}_split_less.csv")[0]:
            info = read_volume_info(out / f"singlecoil_{split}" / name)
            images.append(read_slice(info, info.num_slices // 2)[1])
        rows.append((split, *images))
    plot_synthetic_preview(rows, out / "preview.png")


def _synth_run(args: argparse.Namespace) -> int:
    from cmfnet.data.synth import generate_dataset

    out = generate_dataset(
        args.out,
        n_train=args.train,
        n_val=args.val,
        n_test=args.test,
        slices=args.slices,
        hr_size=args.hr_size,
        width=args.width,
        seed=args.seed,
        source=args.source,
        noise=args.noise,
        progress=not args.quiet,
    )
    if args.preview:
        _synth_preview(out, {"train": args.train, "val": args.val, "test": args.test})
    if not args.quiet:
        print(f"wrote {args.train + args.val + args.test} pairs to {out}")
    return 0


register(
    "synth",
    "write a synthetic paired PD/T2 data set in fastMRI single-coil layout",
    _synth_arguments,
    _synth_run,
)


def register_module(name: str, help: str, module: str) -> None:
    """Add a subcommand whose ``add_arguments(parser)`` and ``run(args)`` live in ``module``
    (imported when the parser is built: keep that module's top-level imports light)."""
    import importlib

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        importlib.import_module(module).add_arguments(parser)

    def run(args: argparse.Namespace) -> int:
        return importlib.import_module(module).run(args)

    register(name, help, add_arguments, run)


register_module(
    "report",
    "build paper-style tables and figures from a sweep folder",
    "cmfnet.commands.report.cli",
)
register_module(
    "bench",
    "measure training/inference throughput, memory and the data path",
    "cmfnet.commands.bench.cli",
)
register_module(
    "predict",
    "write reconstructions of a data split as fastMRI-style HDF5",
    "cmfnet.commands.predict",
)
register_module(
    "evaluate",
    "fastMRI metrics of predictions against targets, per acquisition",
    "cmfnet.commands.evaluate",
)
register_module(
    "import-release",
    "turn a checkpoint of the CMF-Net authors' release into one predict and evaluate take",
    "cmfnet.commands.import_release.cli",
)
register_module(
    "resume",
    "re-run the jobs of a sweep that did not complete, each in its own folder",
    "cmfnet.sweeps.resume",
)


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the ``selected`` subcommand's options are declared (and its module
    imported), so one subcommand's imports never slow or break another."""
    parser = argparse.ArgumentParser(
        prog="cmfnet",
        description="Joint MRI reconstruction and super-resolution guided by a second contrast.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        child = sub.add_parser(name, help=command.help, description=command.help)
        if name == selected:
            command.add_arguments(child)
        child.set_defaults(_command=name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(next((a for a in argv if not a.startswith("-")), None))
    args = parser.parse_args(argv)
    name = args._command
    try:
        status = COMMANDS[name].run(args)
    except (
        Exception
    ) as err:  # bad input of any kind: one line, exit 2; CMFNET_TRACEBACK=1 shows where
        if os.environ.get("CMFNET_TRACEBACK"):
            raise
        print(f"cmfnet {name}: error: {one_line(err)}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
