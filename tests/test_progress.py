"""What a run shows while it trains: the projection of its length, plain lines when output is not a
terminal, and example figures of slices spread across the volumes."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import REPO
from helpers.run import run_env

from cmfnet.lit.progress import (
    CheckedLossProgressBar,
    PlainProgressLines,
    RunClock,
    format_duration,
    progress_bar,
)


def test_format_duration():
    assert format_duration(None) == "?" and format_duration(float("nan")) == "?"
    assert format_duration(59.6) == "0:01:00"
    assert format_duration(3 * 3600 + 62) == "3:01:02"
    assert format_duration(2 * 86400 + 3 * 3600 + 4 * 60) == "2 d 03:04"


def test_run_clock_projects_from_timed_steps_and_validations():
    clock = RunClock(total_steps=100, total_validations=10, warmup_steps=1)
    clock.step(now=0.0, samples=8)  # the warm-up step is not timed
    assert clock.seconds_per_step is None and clock.remaining_s(1, 0) is None
    for k in range(1, 5):
        clock.step(now=2.0 * k, samples=8)  # 2 s per step after warm-up
    assert clock.seconds_per_step == pytest.approx(2.0)
    assert clock.samples_per_s == pytest.approx(4.0)
    assert clock.remaining_s(5, 0) == pytest.approx(
        95 * 2.0
    )  # training only until a validation is timed
    clock.validation_s.append(30.0)
    # 95 steps, 9 validations left plus the test pass, each 30 s
    assert clock.remaining_s(5, 1) == pytest.approx(95 * 2.0 + 10 * 30.0)


def test_the_progress_display_follows_the_terminal():
    assert isinstance(progress_bar(terminal=True), CheckedLossProgressBar)
    plain = progress_bar(terminal=False, plain_interval_s=5)
    assert isinstance(plain, PlainProgressLines) and plain.interval_s == 5


@pytest.mark.slow
def test_a_run_piped_to_a_file_shows_plain_progress_and_a_projection(tmp_path):
    """Output redirected (not a terminal): plain lines with epoch, step, loss, samples/s and
    ETA, and one line projecting the run's time after its first steps."""
    log = tmp_path / "out.txt"
    with open(log, "w") as handle:
        proc = subprocess.run(
            [
                sys.executable,
                str(REPO / "run.py"),
                "experiment=smoke",
                "logger=csv",
                "hydra.run.dir=run",
                "trainer.limit_train_batches=6",
                "trainer.max_epochs=2",
                "callbacks.run_time_estimate.after_steps=2",
                "callbacks.run_time_estimate.long_run_minutes=0",
            ],
            cwd=tmp_path,
            env=run_env(tmp_path),
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    text = log.read_text()
    assert proc.returncode == 0, text[-2000:]
    lines = re.findall(
        r"epoch (\d+)/2 step (\d+)/(\d+) loss ([\d.e+-]+) ([\d.]+) samples/s ETA (\S+)", text
    )
    assert len(lines) >= 2 and {int(epoch) for epoch, *_ in lines} == {1, 2}
    assert all(total == "6" for *_, total, _, _, _ in lines)
    projection = re.search(
        r"projected time of this run after its first steps: (\d+:\d\d:\d\d) more", text
    )
    assert projection, text[-3000:]
    # no GPU and a projection over long_run_minutes (0 here): the quick alternative is named
    assert "No GPU here: for a quick look use experiment=quickstart" in text
    assert not re.search(r"Epoch \d+/\d+ .*━", text)  # no rich bar in a file
    for noise in ("litlogger", "anonymous setting has no effect", "LeafSpec", "Total FLOPs"):
        assert noise not in text, noise  # third-party noise that means nothing to a cmfnet user


@pytest.mark.slow
def test_a_sweep_projects_its_own_time_from_its_job_list(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "run.py"),
            "-m",
            "scale=2,4",
            "experiment=smoke",
            "logger=csv",
            "trainer.limit_train_batches=6",
            "callbacks.run_time_estimate.after_steps=2",
        ],
        cwd=tmp_path,
        env=run_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout + proc.stderr
    assert re.search(
        r"the sweep: about \d+:\d\d:\d\d more if its other jobs are alike \(job 1 of 2\)", text
    ), text[-3000:]
    assert "(job 2 of 2)" in text


def test_example_slices_are_spread_across_volumes_and_depths(fastmri_pairs):
    from cmfnet.data.fastmri import FastMRIPairDataset

    dataset = FastMRIPairDataset(
        fastmri_pairs / "singlecoil_val",
        fastmri_pairs / "pairs.csv",
        scale=2,
        transform=lambda *a: a,
    )
    # two volumes of 3 and 4 slices (the pair's smaller count)
    assert dataset.spread_slices(2) == [("file0_pdfs.h5", 1), ("file1_pdfs.h5", 2)]
    four = dataset.spread_slices(4)
    assert (
        len(four) == 4
        and len(set(four)) == 4
        and {name for name, _ in four} == {"file0_pdfs.h5", "file1_pdfs.h5"}
    )
    assert dataset.spread_slices(1) == [("file0_pdfs.h5", 1)]
    assert len(dataset.spread_slices(50)) == 7  # every slice, once


def test_the_example_figure_has_per_panel_scores_and_a_colour_bar(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    import torch

    from cmfnet.lit.images import example_comparisons
    from cmfnet.mri.figures import plot_comparison

    examples = [
        {
            "fname": f"v{i}.h5",
            "slice_idx": i,
            "input": torch.randn(8, 8),
            "aux": torch.randn(8, 8),
            "sr": torch.rand(32, 32),
            "sr_target": torch.rand(32, 32),
        }
        for i in range(3)
    ]
    comparisons = example_comparisons(examples)
    assert [c.label for c in comparisons] == ["v0.h5\nslice 0", "v1.h5\nslice 1", "v2.h5\nslice 2"]
    bars, texts = [], []
    colorbar, text = plt.Figure.colorbar, plt.Axes.text
    monkeypatch.setattr(
        plt.Figure, "colorbar", lambda self, *a, **k: bars.append(1) or colorbar(self, *a, **k)
    )
    monkeypatch.setattr(
        plt.Axes, "text", lambda self, *a, **k: texts.append(a[2]) or text(self, *a, **k)
    )
    path = plot_comparison(comparisons, tmp_path / "examples.png", title="t")
    assert path.stat().st_size > 10_000
    assert len(bars) == 3  # one error colour bar per slice
    assert len(texts) == 3 and all(re.match(r"-?[\d.]+ dB\nSSIM -?[\d.]+", t) for t in texts)
