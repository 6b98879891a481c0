"""Every command the README shows runs as written (inside the activated virtual environment),
bounded to a few steps, so the README cannot rot.

The commands are read from the README's code blocks, in order, and run in one scratch folder, so
later commands find what earlier ones wrote (a run folder, a sweep folder, a synthetic data set).
Placeholders are filled from those outputs; ``[...]`` marks optional arguments, left out.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from helpers.run import run_env

pytestmark = pytest.mark.slow

RUNNERS = ("python run.py", "cmfnet ", "wandb sync ")
#: appended to run.py commands with an experiment of their own: a few steps of it
FEW_STEPS = (
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
)


def readme_commands(readme: Path = REPO / "README.md") -> list[str]:
    """The command lines of the README's code blocks that run cmfnet (comments stripped)."""
    commands, in_block = [], False
    for line in readme.read_text().splitlines():
        if line.strip().startswith("```"):
            in_block = not in_block
            continue
        command = re.sub(r"\s+#.*$", "", line).strip()
        if in_block and command.startswith(RUNNERS):
            commands.append(command)
    return commands


#: appended to the other commands that would run for minutes
TINY = {
    "cmfnet synth": (
        "--source",
        "phantom",
        "--hr-size",
        "64",
        "--width",
        "72",
        "--train",
        "2",
        "--val",
        "1",
        "--test",
        "1",
        "--slices",
        "2",
    ),
    "cmfnet bench": (
        "experiment=smoke",
        "options=[channels_last]",
        "launch=false",
        "data_workers=[0]",
        "loader_epochs=1",
        "loader_epoch_slices=null",
        "timed_steps=1",
        "warmup_steps=0",
        "data_samples=2",
    ),
}


def bounded(command: str) -> str:
    """A command limited to a few tiny steps: run.py with the smoke preset unless it names its
    own experiment (then a few steps of that) and one model per named sweep; tiny synthetic
    data and a short bench."""
    for start, extra in TINY.items():
        if command.startswith(start):
            return " ".join((command, *extra))
    if (
        not command.startswith("python run.py")
        or "--help" in command
        or "<the run's overrides>" in command
    ):
        return command
    extra = FEW_STEPS if "experiment=" in command else ("experiment=smoke",)
    if "sweeps=" in command and "model=" not in command:
        extra += ("model=cmfnet",)
    return " ".join(
        (command, *extra, "logger.wandb.mode=offline" if "logger=" not in command else "")
    )


def filled(command: str, cwd: Path) -> str:
    """Placeholders replaced by what earlier commands wrote in ``cwd``; optional parts dropped."""

    def newest(pattern: str) -> str:
        found = sorted(glob.glob(str(cwd / pattern)), key=os.path.getmtime)
        assert found, f"nothing matches {pattern} for: {command}"
        return found[-1]

    command = re.sub(r"\s\[[^\]]*\]", "", command)
    if "<run" in command or "CKPT" in command or "<the run's" in command:
        run = newest("outputs/*/*")
        recorded = yaml.safe_load((Path(run) / ".hydra" / "overrides.yaml").read_text()) or []
        command = command.replace(
            "<the run's overrides>", " ".join(shlex.quote(o) for o in recorded)
        )
        command = command.replace("<run folder>", run).replace("<run>", run)
        command = command.replace("CKPT", f"{run}/checkpoints/last.ckpt")
    if "<sweep>" in command:
        command = command.replace("multirun/<sweep>/<timestamp>_<pid>", newest("multirun/*/*_*"))
    return command.replace("DIR", str(cwd / "synth"))


def test_the_readme_shows_the_commands_users_need():
    commands = readme_commands()
    for needed in (
        "python run.py",
        "python run.py -m scale=2,4 accel=4,8",
        "cmfnet synth",
        "cmfnet report",
        "cmfnet resume",
        "cmfnet predict",
        "cmfnet evaluate",
        "cmfnet bench",
        "wandb sync",
    ):
        assert any(c.startswith(needed) for c in commands), needed


#: the README's commands fall into chains that need nothing from one another, each run in its
#: own folder (in parallel under xdist); a command goes to the first chain whose test it passes
CHAINS = {
    "search": lambda c: "hparams_search" in c or "multirun/search" in c,
    "data": lambda c: "DIR" in c or c.startswith(("cmfnet predict", "cmfnet evaluate")),
    "sweeps": lambda c: " -m " in c or "sweeps=" in c or "<sweep>" in c,
    "tools": lambda c: c.startswith("cmfnet bench") or "--help" in c,
    "runs": lambda c: True,
}
NEEDS_A_RUN = ("<run", "CKPT")


def chain_of(command: str) -> str:
    required = re.sub(r"\s\[[^\]]*\]", "", command)  # optional parts left out, as when run
    return next(name for name, belongs in CHAINS.items() if belongs(required))


def chain_commands(chain: str) -> list[str]:
    """The chain's README commands in order, those that write data first (cmfnet synth); a
    plain ``python run.py`` first where a command needs a run folder the chain does not make."""
    commands = [c for c in readme_commands() if chain_of(c) == chain]
    makers = [c for c in commands if c.startswith("cmfnet synth")]
    ordered = makers + [c for c in commands if c not in makers]
    needs_run = any(marker in c for c in ordered for marker in NEEDS_A_RUN)
    if needs_run and "python run.py" not in ordered:
        ordered.insert(len(makers), "python run.py")
    return ordered


def test_every_readme_command_is_in_a_chain_and_the_chains_cover_them_all():
    commands = readme_commands()
    assert set(commands) <= {c for chain in CHAINS for c in chain_commands(chain)}
    assert {chain_of(c) for c in commands} == set(CHAINS)  # no chain is empty


@pytest.mark.parametrize("chain", list(CHAINS))
def test_every_readme_command_runs_as_written(tmp_path, chain):
    env = run_env(
        tmp_path, env={"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    )
    for command in chain_commands(chain):
        line = filled(bounded(command), tmp_path)
        if command.startswith("wandb sync"):  # no network here: the folders it would upload exist
            assert glob.glob(line.split(maxsplit=2)[2]), line
            continue
        args = [
            match
            for arg in shlex.split(line)
            for match in (sorted(glob.glob(str(tmp_path / arg))) if "*" in arg else [arg])
        ]
        if args[0] == "python":
            args = [sys.executable, str(REPO / "run.py"), *args[2:]]
        proc = subprocess.run(
            args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-3000:]}"
