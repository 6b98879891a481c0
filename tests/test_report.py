"""`cmfnet report`: tables (cells, bold, seeds, failures), CSV, idempotency, figures, CLI errors,
the offline W&B run, built on fake sweep folders (no training); one slow end-to-end test."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from cmfnet.cli import main
from cmfnet.commands.report.cli import build_report
from cmfnet.commands.report.figures import curve_panels
from cmfnet.commands.report.load import load_report
from cmfnet.commands.report.paired import PAIRED_COLUMNS
from cmfnet.commands.report.records import CellStats
from cmfnet.commands.report.tables import format_cell
from cmfnet.lit.history import history_csv
from cmfnet.mri.metrics import VOLUME_SCORES_FILE, read_volume_scores, volume_scores_csv
from cmfnet.runs.ownership import mark, owner_kind

HR, LR = 32, 16
#: per-volume SR PSNR around a run's mean (which they keep): 6 test volumes
SPREAD = (-1.5, -1.0, -0.5, 0.5, 1.0, 1.5)


def metrics(
    model: str, scale: int, accel: int, seed: int = 42, sr_psnr: float = 30.0, **extra
) -> dict:
    """A completed metrics.json: SR PSNR as given, the other metrics derived from it."""
    values = {
        "model": model,
        "data": "synthetic",
        "mask": "random",
        "scale": scale,
        "accel": accel,
        "seed": seed,
        "status": "completed",
        "wandb_run_id": f"id{seed}",
        "sr_psnr": sr_psnr,
        "sr_psnr_std": 1.5,
        "sr_ssim": sr_psnr / 40,
        "sr_ssim_std": 0.01,
        "sr_nmse": 1 / sr_psnr,
        "sr_nmse_std": 0.002,
        "rec_psnr": sr_psnr + 2,
        "rec_psnr_std": 1.0,
        "rec_ssim": sr_psnr / 45,
        "rec_ssim_std": 0.02,
        "rec_nmse": 0.5 / sr_psnr,
        "rec_nmse_std": 0.001,
    }
    return {**values, **extra}


def write_job(
    sweep: Path,
    name: str,
    record: dict,
    overrides: list[str] | None = None,
    examples_seed: int | None = None,
    history: list[float] | None = None,
    volumes: list[float] | None = None,
) -> Path:
    """A job folder: metrics.json, optional .hydra/overrides.yaml, a tiny examples.npz, a
    history.csv with the given val SR PSNR per epoch and a test_volumes.csv with the given SR
    PSNR per volume (:func:`write_volumes`)."""
    job = sweep / name
    job.mkdir(parents=True)
    (job / "metrics.json").write_text(json.dumps(record))
    if volumes is not None:
        write_volumes(job, volumes, record.get("scoring", "fastmri"))
    if history is not None:
        rows = [
            {"epoch": e, "step": 10 * (e + 1), "train/loss": 1.0 / (e + 1), "val/sr_psnr": v}
            for e, v in enumerate(history)
        ]
        (job / "history.csv").write_text(history_csv(rows))
    if overrides is not None:
        (job / ".hydra").mkdir()
        (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if examples_seed is not None:
        rng = np.random.default_rng(examples_seed)
        target = np.random.default_rng(0).random((HR, HR), dtype=np.float32)
        arrays = {
            "fname_0": np.asarray("file1.h5"),
            "slice_idx_0": np.asarray(3),
            "input_0": rng.standard_normal((LR, LR)).astype(np.float32),
            "aux_0": rng.standard_normal((LR, LR)).astype(np.float32),
            "sr_0": target + 0.1 * rng.standard_normal((HR, HR)).astype(np.float32),
            "sr_target_0": target,
            "rec_0": rng.random((LR, LR), dtype=np.float32),
            "rec_target_0": rng.random((LR, LR), dtype=np.float32),
        }
        np.savez_compressed(job / "examples.npz", count=1, **arrays)
    return job


def write_volumes(job: Path, sr_psnr: list[float], scoring: str = "fastmri") -> None:
    """test_volumes.csv as a run writes it: SR PSNR per volume as given, rec PSNR 2 dB more,
    SSIM = PSNR / 40, NMSE = 1 / PSNR."""
    scores = {
        (scoring, output): {
            f"vol{i:02d}.h5": {"psnr": psnr + extra, "ssim": (psnr + extra) / 40, "nmse": 1 / psnr}
            for i, psnr in enumerate(sr_psnr)
        }
        for output, extra in (("sr", 0.0), ("rec", 2.0))
    }
    (job / VOLUME_SCORES_FILE).write_text(volume_scores_csv(scores))


def around(mean: float) -> list[float]:
    return [mean + offset for offset in SPREAD]


@pytest.fixture
def sweep(tmp_path) -> Path:
    """2 scales x 1 accel; cmfnet beats edsr at x2 but not x4; zero_filled is worst; two seeds
    for cmfnet at x2; one failed t2net job."""
    root = tmp_path / "multirun" / "paper" / "2026-01-01_00-00-00_1"
    root.mkdir(parents=True)
    mark(root, "sweep")  # as the run's folder callback marks every sweep folder
    write_job(
        root,
        "0_model=cmfnet,scale=2",
        metrics("cmfnet", 2, 4, sr_psnr=33.0),
        examples_seed=1,
        history=[30.0, 32.0, 33.0],
        volumes=around(33.0),
    )
    write_job(
        root,
        "1_model=cmfnet,scale=2,seed=7",
        metrics("cmfnet", 2, 4, seed=7, sr_psnr=34.0),
        history=[31.0, 34.0],
        volumes=around(34.0),
    )
    write_job(
        root,
        "2_model=edsr,scale=2",
        metrics("edsr", 2, 4, sr_psnr=32.0),
        examples_seed=2,
        history=[29.0, 32.0],
        volumes=around(32.0),
    )
    write_job(
        root,
        "3_model=zero_filled,scale=2",
        metrics("zero_filled", 2, 4, sr_psnr=25.0),
        examples_seed=3,
        volumes=around(25.0),
    )
    write_job(
        root,
        "4_model=cmfnet,scale=4",
        metrics("cmfnet", 4, 4, sr_psnr=28.0),
        examples_seed=4,
        volumes=around(28.0),
    )
    write_job(
        root,
        "5_model=edsr,scale=4",
        metrics("edsr", 4, 4, sr_psnr=29.5),
        examples_seed=5,
        volumes=around(29.5),
    )
    write_job(
        root,
        "6_model=t2net,scale=4",
        {
            "status": "failed",
            "error": "CUDA out of memory",
            "model": "t2net",
            "data": "synthetic",
            "mask": "random",
            "scale": 4,
            "accel": 4,
            "seed": 42,
        },
    )
    return root


def table_lines(markdown: str, title: str) -> list[str]:
    """The rows of the Markdown table under the heading ``## title``."""
    section = markdown.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ")]


def cells(markdown: str, title: str) -> dict[str, dict[str, str]]:
    """``{method: {column header: cell}}`` of one table."""
    header, *rows = table_lines(markdown, title)
    names = [c.strip() for c in header.strip("|").split("|")]
    return {
        r[0]: dict(zip(names, r))
        for r in ([c.strip() for c in row.strip("|").split("|")] for row in rows)
    }


def test_sr_table_cells_bold_order_seeds_and_failures(sweep, tmp_path):
    out = tmp_path / "out"
    build_report([sweep], out)
    markdown = (out / "report.md").read_text()
    sr = cells(markdown, "Super-resolution")
    assert list(sr) == ["zero_filled", "edsr", "T2Net", "CMF-Net"]  # paper order, paper names
    # x2: cmfnet is the mean over seeds 33 and 34 -> 33.50, sd over seeds 0.71; best -> bold
    assert (
        sr["CMF-Net"]["x2 / R4 PSNR ↑"]
        == f"**33.50** ± 1.50 (seeds: 2, sd {statistics.stdev([33.0, 34.0]):.2f})"
    )
    assert sr["edsr"]["x2 / R4 PSNR ↑"] == "32.00 ± 1.50"
    # x4: edsr wins PSNR and SSIM; NMSE bold is the minimum (edsr's 1/29.5)
    assert sr["edsr"]["x4 / R4 PSNR ↑"].startswith("**29.50**")
    assert not sr["CMF-Net"]["x4 / R4 PSNR ↑"].startswith("**")
    assert sr["edsr"]["x4 / R4 NMSE ↓"].startswith(f"**{1 / 29.5:.4f}**")
    assert sr["zero_filled"]["x4 / R4 PSNR ↑"] == "-"  # never run there
    assert sr["T2Net"]["x4 / R4 PSNR ↑"] == "failed"
    assert sr["T2Net"]["x2 / R4 PSNR ↑"] == "-"
    bold = [
        cell
        for row in sr.values()
        for key, cell in row.items()
        if "PSNR" in key and cell.startswith("**")
    ]
    assert len(bold) == 2  # one per column
    rec = cells(markdown, "Reconstruction")
    assert rec["CMF-Net"]["x2 / R4 PSNR ↑"].startswith("**35.50** ± 1.00")
    failures = markdown.split("## Failed jobs", 1)[1]
    assert "6_model=t2net,scale=4" in failures and "CUDA out of memory" in failures


def test_csv_is_tidy_long_format_with_seed_columns(sweep, tmp_path):
    build_report([sweep], tmp_path / "out")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "report.csv").read_text())))
    assert list(rows[0]) == [
        "method",
        "model",
        "scale",
        "accel",
        "data",
        "mask",
        "scoring",
        "precision",
        "output",
        "metric",
        "mean",
        "std",
        "n_seeds",
        "seed_sd",
    ]
    assert len(rows) == 5 * 2 * 3  # 5 filled (method, cell) pairs x 2 outputs x 3 metrics
    seeds = next(
        r
        for r in rows
        if (r["method"], r["scale"], r["output"], r["metric"]) == ("CMF-Net", "2", "sr", "psnr")
    )
    assert float(seeds["mean"]) == 33.5 and seeds["n_seeds"] == "2"
    assert float(seeds["seed_sd"]) == pytest.approx(statistics.stdev([33.0, 34.0]))
    single = next(
        r
        for r in rows
        if (r["method"], r["scale"], r["output"], r["metric"]) == ("edsr", "4", "rec", "nmse")
    )
    assert float(single["mean"]) == pytest.approx(0.5 / 29.5) and single["seed_sd"] == ""


def test_report_is_idempotent(sweep, tmp_path):
    build_report([sweep], tmp_path / "out")
    names = ("report.md", "report.csv", "report_paired.csv")
    first = {name: (tmp_path / "out" / name).read_bytes() for name in names}
    build_report([sweep], tmp_path / "out")
    assert {name: (tmp_path / "out" / name).read_bytes() for name in first} == first


def test_rerun_folder_completes_a_failed_job_and_supersedes_duplicates(sweep, tmp_path):
    rerun = tmp_path / "multirun" / "paper" / "2026-01-02_00-00-00_2"
    write_job(rerun, "0_model=t2net,scale=4", metrics("t2net", 4, 4, sr_psnr=31.0))
    write_job(rerun, "1_model=edsr,scale=2", metrics("edsr", 2, 4, sr_psnr=30.0))
    build_report([sweep, rerun], tmp_path / "out")
    markdown = (tmp_path / "out" / "report.md").read_text()
    sr = cells(markdown, "Super-resolution")
    assert sr["T2Net"]["x4 / R4 PSNR ↑"].startswith("**31.00**")
    assert (
        sr["edsr"]["x2 / R4 PSNR ↑"] == "30.00 ± 1.50"
    )  # the later folder wins, not a second seed
    assert "re-run completed" in markdown.split("## Failed jobs", 1)[1]
    assert "replaced by" in markdown.split("## Superseded", 1)[1]


def test_killed_job_is_placed_from_its_hydra_record(sweep, tmp_path):
    job = sweep / "7_model=unet_edsr,scale=2"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("scale: 2\naccel: 4\nseed: 42\n")
    (job / ".hydra" / "hydra.yaml").write_text(
        "hydra:\n  runtime:\n    choices:\n"
        "      model: unet_edsr\n      data: synthetic\n      mask: random\n"
    )
    build_report([sweep], tmp_path / "out")
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert cells(markdown, "Super-resolution")["unet_edsr"]["x2 / R4 PSNR ↑"] == "failed"
    assert "(unet_edsr, x2 R4, seed 42): no metrics.json" in markdown


def test_overrides_beyond_the_cell_name_separate_methods(tmp_path):
    root = tmp_path / "multirun" / "loss_weights" / "ts"
    for i, w in enumerate((0.2, 1.0)):
        write_job(
            root,
            f"{i}_loss.w_rec={w}",
            metrics("cmfnet", 4, 4, sr_psnr=30 + i),
            overrides=["sweeps=loss_weights", f"loss.w_rec={w}", "loss.w_sr=1.0", "launcher=gpus"],
        )
    report = load_report([root])
    assert report.methods == ["CMF-Net [loss.w_rec=0.2]", "CMF-Net [loss.w_rec=1.0]"]


def test_seed_sweep_with_cell_presets_adds_seeds_to_the_same_methods(sweep, tmp_path):
    seeds = tmp_path / "multirun" / "paper_seeds" / "2026-01-02_00-00-00_1"
    write_job(
        seeds,
        "0_+cell=x2r4,model=edsr,seed=43",
        metrics("edsr", 2, 4, seed=43, sr_psnr=30.0),
        overrides=["model=edsr", "+cell=x2r4", "seed=43", "sweeps=paper_seeds"],
    )
    report = load_report([sweep, seeds])
    assert report.methods == ["zero_filled", "edsr", "T2Net", "CMF-Net"]
    column = next(c for c in report.columns if c.scale == 2)
    assert [run.seed for run in report.runs_of("edsr", column)] == [42, 43]


def test_cell_format_without_std_and_with_seeds():
    assert format_cell(CellStats(0.123456, float("nan"), 1, None), "nmse") == "0.1235"
    assert (
        format_cell(CellStats(30.0, 1.0, 3, 0.25), "psnr", bold=True)
        == "**30.00** ± 1.00 (seeds: 3, sd 0.25)"
    )
    assert (
        format_cell(CellStats(float("nan"), 0.0, 1, None), "psnr") == "nan"
    )  # a metrics.json edited by hand


def test_cli_writes_tables_and_figures(sweep, capsys):
    assert main(["report", str(sweep), "--no-wandb"]) == 0
    for name in ("report.md", "report.csv"):
        assert (sweep / name).stat().st_size > 200
    pngs = {p.name: p.stat().st_size for p in sweep.glob("*.png")}
    assert set(pngs) == {
        "psnr_vs_accel.png",
        "learning_curves.png",
        "qualitative_x2_r4.png",
        "qualitative_x4_r4.png",
    }
    assert all(size > 10_000 for size in pngs.values())
    assert not (sweep / "wandb").exists()
    assert "report.md" in capsys.readouterr().out
    markdown = (sweep / "report.md").read_text()
    assert "`qualitative_x2_r4.png`" in markdown and "psnr_vs_accel.png" in markdown


def test_report_out_refuses_a_users_folder_and_accepts_an_older_unmarked_sweep(
    sweep, tmp_path, capsys
):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_bytes(b"my own report\n")
    assert main(["report", str(sweep), "--out", str(mine), "--no-wandb"]) == 2
    assert "holds files that cmfnet did not write" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["report.md"] and (
        mine / "report.md"
    ).read_bytes() == b"my own report\n"
    (sweep / ".cmfnet-owned").unlink()
    assert main(["report", str(sweep), "--no-wandb"]) == 2  # unmarked, and not a Hydra sweep folder
    (sweep / "multirun.yaml").write_text("hydra: {}\n")  # what Hydra writes at a sweep's root
    assert main(["report", str(sweep), "--no-wandb"]) == 0
    assert owner_kind(sweep) == "sweep" and (sweep / "report.md").is_file()


def test_learning_curves_come_from_history_csv_one_curve_per_seed(sweep):
    panels = curve_panels(load_report([sweep]))
    assert list(panels) == ["x2 / R4"]  # no x4 run has a history.csv
    assert panels["x2 / R4"]["CMF-Net"] == [
        [(0, 31.0), (1, 34.0)],
        [(0, 30.0), (1, 32.0), (2, 33.0)],
    ]  # by seed
    assert panels["x2 / R4"]["edsr"] == [[(0, 29.0), (1, 32.0)]]
    assert "zero_filled" not in panels["x2 / R4"]


def test_report_without_any_history_notes_the_missing_curves(sweep, tmp_path):
    for path in sweep.rglob("history.csv"):
        path.unlink()
    build_report([sweep], tmp_path / "out")
    assert not (tmp_path / "out" / "learning_curves.png").exists()
    assert "no learning curves" in (tmp_path / "out" / "report.md").read_text()


def test_name_sets_the_table_file_names_and_rejects_paths(sweep, tmp_path, capsys):
    assert (
        main(
            [
                "report",
                str(sweep),
                "--no-wandb",
                "--out",
                str(tmp_path / "out"),
                "--name",
                "results",
            ]
        )
        == 0
    )
    assert {p.name for p in (tmp_path / "out").glob("results.*")} == {"results.md", "results.csv"}
    assert not list((tmp_path / "out").glob("report.*"))
    assert (
        main(["report", str(sweep), "--no-wandb", "--out", str(tmp_path / "bad"), "--name", "../x"])
        == 2
    )
    assert "--name" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_qualitative_figure_notes_methods_without_examples(sweep, tmp_path):
    (sweep / "2_model=edsr,scale=2" / "examples.npz").unlink()
    build_report([sweep], tmp_path / "out")
    assert (
        "qualitative_x2_r4.png: edsr: no examples.npz"
        in (tmp_path / "out" / "report.md").read_text()
    )


def test_qualitative_figure_leaves_out_outputs_of_another_size(sweep, tmp_path):
    path = sweep / "2_model=edsr,scale=2" / "examples.npz"
    arrays = dict(np.load(path))
    arrays["sr_0"] = np.zeros((HR + 4, HR + 4), np.float32)
    np.savez_compressed(path, **arrays)
    build_report([sweep], tmp_path / "out")
    report = (tmp_path / "out" / "report.md").read_text()
    assert (
        "qualitative_x2_r4.png: edsr: its output" in report
        and "differs from the HR target" in report
    )
    assert (tmp_path / "out" / "qualitative_x2_r4.png").is_file()


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_missing_or_empty_sweep_is_a_one_line_error(tmp_path, capsys, make):
    folder = tmp_path / "sweep"
    if make == "empty":
        folder.mkdir()
    assert main(["report", str(folder), "--no-wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(folder) in err
    assert ("not found" if make == "missing" else "no job folders") in err


def test_wandb_offline_run_holds_the_tables(sweep, tmp_path, monkeypatch):
    for var, sub in (
        ("WANDB_DIR", "w"),
        ("WANDB_CACHE_DIR", "c"),
        ("WANDB_CONFIG_DIR", "g"),
        ("WANDB_DATA_DIR", "d"),
    ):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    written = build_report([sweep], tmp_path / "out", use_wandb=True)
    run_dir = written["wandb_run"]
    assert run_dir.parent == tmp_path / "out" / "wandb" and run_dir.name.startswith("offline-run-")
    records = b"".join(p.read_bytes() for p in run_dir.glob("*.wandb"))
    for expected in (b"paper/2026-01-01_00-00-00_1", b"report/sr_table", b"report/rec_table"):
        assert expected in records
    table = json.loads(
        next((run_dir / "files" / "media" / "table" / "report").glob("sr_table_*.json")).read_text()
    )
    assert table["columns"][:3] == ["method", "params", "x2 / R4 PSNR ↑"]
    assert ["zero_filled", "edsr", "T2Net", "CMF-Net"] == [row[0] for row in table["data"]]
    assert table["data"][3][2] == "33.50 ± 1.50 (seeds: 2, sd 0.71)"  # no Markdown bold inside W&B


@pytest.mark.slow
def test_report_on_a_real_two_job_smoke_multirun(tmp_path):
    env = {
        **os.environ,
        "CMFNET_CACHE_DIR": str(tmp_path / "cache"),
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
    }
    subprocess.run(
        [
            sys.executable,
            str(REPO / "run.py"),
            "-m",
            "model=zero_filled,cmfnet",
            "experiment=smoke",
            "logger=csv",
        ],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    sweep = next((tmp_path / "multirun" / "adhoc").iterdir())
    assert main(["report", str(sweep), "--no-wandb"]) == 0
    sr = cells((sweep / "report.md").read_text(), "Super-resolution")
    assert list(sr) == ["zero_filled", "CMF-Net"]
    assert sr["zero_filled"]["params"] == "0.00 M"  # from the runs' metrics.json
    assert sr["CMF-Net"]["params"].endswith(" M") and sr["CMF-Net"]["params"] != "0.00 M"
    assert all(
        cell not in ("-", "failed") for row in sr.values() for cell in list(row.values())[1:]
    )
    assert (sweep / "qualitative_x4_r4.png").stat().st_size > 10_000
    assert (sweep / "learning_curves.png").stat().st_size > 10_000
    # each job saved its test volumes' scores; the report pairs zero_filled with cmfnet on them
    for job in sweep.glob("*_model=*"):
        kept = read_volume_scores(job / VOLUME_SCORES_FILE)
        recorded = json.loads((job / "metrics.json").read_text())
        assert recorded["precision"] == "32-true"
        for output in ("sr", "rec"):
            values = [v["psnr"] for v in kept[("fastmri", output)].values()]
            assert statistics.fmean(values) == pytest.approx(recorded[f"{output}_psnr"])
    rows = paired_csv(sweep / "report_paired.csv")
    zero = rows[("zero_filled", "4", "sr", "psnr")]
    assert zero["note"] == "" and int(zero["n_volumes"]) == len(kept[("fastmri", "sr")]) >= 1
    assert float(zero["ci_low"]) <= float(zero["diff"]) <= float(zero["ci_high"])


def test_metrics_json_is_strict_json_and_a_diverged_run_still_reports(tmp_path):
    """NaN or infinite metrics (a diverged run) are written as null, never as JSON-breaking NaN or
    Infinity, and the report shows the run's other numbers."""
    from cmfnet.runs.io import write_json_atomic

    root = tmp_path / "sweep"
    job = write_job(root, "0_model=cmfnet", {})
    write_json_atomic(
        job / "metrics.json",
        metrics("cmfnet", 2, 4, sr_psnr_std=float("nan"), rec_psnr=float("-inf")),
    )
    text = (job / "metrics.json").read_text()
    record = json.loads(
        text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}")
    )
    assert (
        record["sr_psnr_std"] is None and record["rec_psnr"] is None and record["sr_psnr"] == 30.0
    )
    build_report([root], tmp_path / "out")
    sr = cells((tmp_path / "out" / "report.md").read_text(), "Super-resolution")
    assert sr["CMF-Net"]["x2 / R4 PSNR ↑"].startswith("**30.00**")


def test_history_rows_read_back_keep_epoch_and_step_as_integers(tmp_path):
    """A resumed run rewrites the rows it keeps: they must read and write back unchanged."""
    from cmfnet.lit.history import read_history

    text = history_csv([{"epoch": 0, "step": 3, "train/loss": 0.5, "val/sr_psnr": 20.25}])
    (tmp_path / "history.csv").write_text(text)
    assert history_csv(read_history(tmp_path / "history.csv")) == text


# --------------------------------------------------------------------------------------------
# paired comparisons with the reference method, and tables that never mix regimes
# --------------------------------------------------------------------------------------------

#: ten test volumes whose scores differ a lot from each other (exact in binary)
TEN = [20.0 + 2 * i for i in range(10)]


def paired_cells(
    markdown: str, output: str = "SR", reference: str = "CMF-Net"
) -> dict[tuple[str, str], dict[str, str]]:
    """``{(method, setting): {column header: cell}}`` of one output's paired comparison."""
    title = f"## Paired differences from `{reference}`: {output} output"
    section = markdown.split(title, 1)[1].split("\n## ", 1)[0]
    header, *rows = [line for line in section.splitlines() if line.startswith("| ")]
    names = [c.strip() for c in header.strip("|").split("|")]
    return {
        (r[0], r[1]): dict(zip(names, r))
        for r in ([c.strip() for c in row.strip("|").split("|")] for row in rows)
    }


def regime_tables(markdown: str, title: str) -> dict[str, dict[str, dict[str, str]]]:
    """``{regime heading: {method: {column header: cell}}}`` of the tables under ``## title``."""
    section = markdown.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    return {
        part.split("\n", 1)[0]: cells("## " + part, part.split("\n", 1)[0])
        for part in section.split("### ")[1:]
    }


def paired_csv(path: Path) -> dict[tuple[str, str, str, str], dict[str, str]]:
    """``{(method, scale, output, metric): row}`` of a report_paired.csv."""
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert rows and list(rows[0]) == list(PAIRED_COLUMNS)
    return {(r["method"], r["scale"], r["output"], r["metric"]): r for r in rows}


def test_volume_scores_file_reads_back_exactly(tmp_path):
    scores = {("fastmri", "sr"): {"a.h5": {"psnr": 0.1 + 0.2, "ssim": float("nan"), "nmse": 1e-9}}}
    (tmp_path / VOLUME_SCORES_FILE).write_text(volume_scores_csv(scores))
    back = read_volume_scores(tmp_path / VOLUME_SCORES_FILE)
    assert back[("fastmri", "sr")]["a.h5"]["psnr"] == 0.1 + 0.2
    assert math.isnan(back[("fastmri", "sr")]["a.h5"]["ssim"])
    (tmp_path / VOLUME_SCORES_FILE).write_text("volume,psnr\na.h5,1\n")
    with pytest.raises(ValueError, match="test_volumes.csv: unreadable per-volume scores"):
        read_volume_scores(tmp_path / VOLUME_SCORES_FILE)


def test_paired_comparison_known_answers_in_the_table_and_csv(tmp_path):
    """edsr is cmfnet + 1 dB on every volume (interval [1, 1], p = 2/2^10); zero_filled differs
    from cmfnet symmetrically (interval around 0: n.s.); unet_edsr saved no per-volume scores."""
    root = tmp_path / "sweep"
    symmetric = [-3.0, 3.0, -2.0, 2.0, -1.0, 1.0, -0.5, 0.5, -0.25, 0.25]
    write_job(root, "0_model=cmfnet", metrics("cmfnet", 4, 4), volumes=TEN)
    write_job(root, "1_model=edsr", metrics("edsr", 4, 4), volumes=[v + 1 for v in TEN])
    write_job(
        root,
        "2_model=zero_filled",
        metrics("zero_filled", 4, 4),
        volumes=[v + d for v, d in zip(TEN, symmetric)],
    )
    write_job(root, "3_model=unet_edsr", metrics("unet_edsr", 4, 4))
    written = build_report([root], tmp_path / "out")
    markdown = written["markdown"].read_text()
    table = {method: row for (method, _), row in paired_cells(markdown).items()}
    assert list(table) == ["zero_filled", "edsr", "unet_edsr"]  # not the reference itself
    assert table["edsr"]["setting"] == "x4 / R4" and table["edsr"]["volumes × seeds"] == "10 × 1"
    assert table["edsr"]["Δ PSNR (dB) [95% CI]"] == "+1.00 [+1.00, +1.00]"  # no n.s. marker
    assert table["edsr"]["p (PSNR)"] == "0.002"  # 2 / 2**10
    assert table["edsr"]["Δ SSIM [95% CI]"] == "+0.0250 [+0.0250, +0.0250]"
    assert table["zero_filled"]["Δ PSNR (dB) [95% CI]"].endswith(" n.s.")
    assert table["zero_filled"]["Δ PSNR (dB) [95% CI]"].startswith("+0.00 [-")
    assert table["unet_edsr"]["Δ PSNR (dB) [95% CI]"] == "n/a"
    assert table["unet_edsr"]["volumes × seeds"] == "-"
    note = f"unet_edsr, x4 / R4: `{root / '3_model=unet_edsr'}` has no test_volumes.csv"
    assert note in markdown.split("## Paired differences from `CMF-Net`: SR output", 1)[1]
    assert "10000 resamples, seed 0" in markdown  # the defaults, as the report states them

    rows = paired_csv(written["paired_csv"])
    edsr = rows[("edsr", "4", "sr", "psnr")]
    assert [float(edsr[k]) for k in ("diff", "ci_low", "ci_high")] == [1.0, 1.0, 1.0]
    assert float(edsr["p"]) == pytest.approx(2 / 2**10)
    assert (edsr["n_volumes"], edsr["n_seeds"], edsr["significant"]) == ("10", "1", "True")
    assert edsr["reference"] == "CMF-Net" and edsr["note"] == ""
    zero = rows[("zero_filled", "4", "rec", "psnr")]
    assert float(zero["ci_low"]) < 0 < float(zero["ci_high"]) and zero["significant"] == "False"
    missing = rows[("unet_edsr", "4", "sr", "ssim")]
    assert missing["diff"] == "" and "has no test_volumes.csv" in missing["note"]
    assert {key[0] for key in rows} == {"edsr", "zero_filled", "unet_edsr"}


def test_seeds_are_paired_on_the_common_ones_and_shown(sweep, tmp_path):
    """The fixture: cmfnet has seeds 42 and 7 at x2, edsr only 42 (1 dB below cmfnet's 42).
    Seed 7 is not read: its missing per-volume scores do not matter."""
    (sweep / "1_model=cmfnet,scale=2,seed=7" / VOLUME_SCORES_FILE).unlink()
    written = build_report([sweep], tmp_path / "out")
    markdown = written["markdown"].read_text()
    table = paired_cells(markdown)
    assert list(table) == [
        ("zero_filled", "x2 / R4"),
        ("edsr", "x2 / R4"),
        ("edsr", "x4 / R4"),
    ]  # t2net failed: nothing to compare
    assert table[("edsr", "x2 / R4")]["volumes × seeds"] == "6 × 1"
    assert table[("edsr", "x2 / R4")]["Δ PSNR (dB) [95% CI]"] == "-1.00 [-1.00, -1.00]"
    assert table[("edsr", "x4 / R4")]["Δ PSNR (dB) [95% CI]"] == "+1.50 [+1.50, +1.50]"
    assert "- edsr, x2 / R4: seed(s) 7 left out (run by one side only)" in markdown
    rows = paired_csv(written["paired_csv"])
    assert rows[("edsr", "2", "sr", "psnr")]["n_seeds"] == "1"
    assert float(rows[("edsr", "4", "sr", "psnr")]["diff"]) == pytest.approx(1.5)
    assert ("T2Net", "4", "sr", "psnr") not in rows  # failed: nothing to compare


def test_two_seeds_each_give_volumes_times_seeds(tmp_path):
    root = tmp_path / "sweep"
    for i, seed in enumerate((42, 43)):
        write_job(root, f"{i}_cmfnet", metrics("cmfnet", 4, 4, seed=seed), volumes=TEN)
        gain = 2.0 if seed == 42 else 0.0  # 1 dB on average over the seeds, on every volume
        write_job(
            root,
            f"{i + 2}_edsr",
            metrics("edsr", 4, 4, seed=seed),
            volumes=[v + gain for v in TEN],
        )
    rows = paired_csv(build_report([root], tmp_path / "out")["paired_csv"])
    edsr = rows[("edsr", "4", "sr", "psnr")]
    assert (edsr["n_volumes"], edsr["n_seeds"]) == ("10", "2")
    assert [float(edsr[k]) for k in ("diff", "ci_low", "ci_high")] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "field, values",
    [
        ("precision", ("32-true", "bf16-mixed")),
        ("scoring", ("fastmri", "fastmri_nonneg")),
        ("data", ("synthetic", "fastmri_knee")),
    ],
)
def test_runs_of_another_precision_scoring_or_data_get_their_own_tables(tmp_path, field, values):
    """cmfnet in one regime, edsr and a second cmfnet run (same seed) in the other: two tables
    per output, each under a heading naming its regime; nothing is paired across them."""
    root = tmp_path / "sweep"
    first, second = values
    write_job(root, "0_cmfnet", metrics("cmfnet", 4, 4, **{field: first}), volumes=TEN)
    write_job(root, "1_edsr", metrics("edsr", 4, 4, sr_psnr=31.0, **{field: second}), volumes=TEN)
    write_job(root, "2_cmfnet", metrics("cmfnet", 4, 4, sr_psnr=29.0, **{field: second}))
    markdown = build_report([root], tmp_path / "out")["markdown"].read_text()
    assert "never mixed" in markdown and "Superseded" not in markdown
    tables = regime_tables(markdown, "Super-resolution")
    assert len(tables) == 2
    by_value = {v: rows for v in values for t, rows in tables.items() if f"{field} {v}," in t + ","}
    assert list(by_value[first]) == ["CMF-Net"]
    assert list(by_value[second]) == ["edsr", "CMF-Net"]
    assert by_value[first]["CMF-Net"]["x4 / R4 PSNR ↑"].startswith("**30.00**")
    assert by_value[second]["CMF-Net"]["x4 / R4 PSNR ↑"].startswith("29.00")
    paired = markdown.split("## Paired differences from `CMF-Net`: SR output", 1)[1]
    assert "n/a" in paired and "has no test_volumes.csv" in paired  # edsr vs its own regime's
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "report.csv").read_text())))
    assert {r[field] for r in rows if r["method"] == "edsr"} == {second}


def test_precision_of_older_runs_is_read_from_their_config(tmp_path):
    root = tmp_path / "sweep"
    write_job(root, "0_cmfnet", metrics("cmfnet", 4, 4, precision="bf16-mixed"))
    older = write_job(root, "1_cmfnet", metrics("cmfnet", 4, 4, seed=43))
    (older / "config.yaml").write_text("trainer:\n  precision: bf16-mixed\n")
    report = load_report([root])
    assert {run.column.precision for run in report.runs} == {"bf16-mixed"}
    assert len(report.regimes) == 1


def test_reference_and_bootstrap_options(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["report", str(sweep), "--no-wandb", "--out", str(out)]
    assert main([*args, "--reference", "edsr", "--bootstrap", "500", "--bootstrap-seed", "3"]) == 0
    markdown = (out / "report.md").read_text()
    assert "## Paired differences from `edsr`: SR output" in markdown
    assert "500 resamples, seed 3" in markdown
    assert paired_csv(out / "report_paired.csv")[("CMF-Net", "2", "sr", "psnr")]["diff"] == "1.0"
    assert main([*args, "--reference", "CMF-Net"]) == 0  # the name in the tables, or its model
    assert "## Paired differences from `CMF-Net`: SR output" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main([*args, "--reference", "unet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--reference 'unet': no such method or model" in err
    assert "(methods: zero_filled, edsr, T2Net, CMF-Net)" in err
    assert main([*args, "--bootstrap", "0"]) == 2
    assert "--bootstrap must be at least 1" in capsys.readouterr().err


def test_without_the_reference_method_the_comparison_says_so(tmp_path):
    root = tmp_path / "sweep"
    write_job(root, "0_edsr", metrics("edsr", 4, 4), volumes=TEN)
    markdown = build_report([root], tmp_path / "out")["markdown"].read_text()
    assert "No runs of `CMF-Net`; `--reference METHOD` picks another." in markdown


def test_variants_are_paired_with_the_reference_under_the_same_overrides(tmp_path):
    """A sweep over a learning rate makes one method per (model, lr); each is compared with the
    reference's run at the same lr: CMF-Net is 1 dB below the reference at lr 1e-3 and 2 dB
    below at 1e-4 on every volume."""
    root = tmp_path / "sweep"
    for i, (model, lr, shift) in enumerate(
        [
            ("cmfnet", "0.001", -1.0),
            ("cmfnet_no_mmf", "0.001", 0.0),
            ("cmfnet", "0.0001", -2.0),
            ("cmfnet_no_mmf", "0.0001", 0.0),
        ]
    ):
        write_job(
            root,
            f"{i}_model={model},optimizer.lr={lr}",
            metrics(model, 4, 8),
            overrides=[f"model={model}", f"optimizer.lr={lr}", "sweeps=diagnosis_optimiser"],
            volumes=[v + shift for v in TEN],
        )
    written = build_report([root], tmp_path / "out", reference="cmfnet_no_mmf")
    markdown = written["markdown"].read_text()
    table = paired_cells(markdown, reference="cmfnet_no_mmf")
    diffs = {method: row["Δ PSNR (dB) [95% CI]"] for (method, _), row in table.items()}
    assert diffs == {
        "CMF-Net [optimizer.lr=0.001]": "-1.00 [-1.00, -1.00]",
        "CMF-Net [optimizer.lr=0.0001]": "-2.00 [-2.00, -2.00]",
    }
    rows = paired_csv(written["paired_csv"])
    assert rows[("CMF-Net [optimizer.lr=0.0001]", "4", "sr", "psnr")]["reference"] == (
        "cmfnet_no_mmf [optimizer.lr=0.0001]"
    )
    assert "paired with `cmfnet_no_mmf` under the same overrides" in markdown
