"""`cmfnet bench methods=[...]`: each compared method's counts, training-memory floor and speed
beside a reference measured in the same run."""

from __future__ import annotations

import json

import pytest
import torch

from cmfnet.cli import main
from cmfnet.commands.bench.methods import (
    TRAINING_BYTES_PER_PARAMETER,
    count_method,
    measure_methods,
)
from cmfnet.commands.bench.settings import compose_bench_config
from cmfnet.models import build_model


def test_the_memory_floor_shows_full_mtrans_far_above_cmfnet_before_anything_is_allocated():
    cmf = count_method([], "cmfnet")  # the paper's size: x4, LR 80
    mtrans = count_method([], "mtrans_edsr_mc")
    assert cmf["params"] == 47_898_498 and cmf["lr_size"] == [80, 80]
    assert cmf["training_memory_floor_gb"] == pytest.approx(
        47_898_498 * TRAINING_BYTES_PER_PARAMETER / 2**30
    )
    cfg = compose_bench_config(["model=mtrans_edsr_mc"])
    with torch.device("meta"):
        expected = sum(p.numel() for p in build_model(cfg.model).parameters())
    assert mtrans["params"] == expected > 700_000_000
    assert mtrans["training_memory_floor_gb"] > 10 * cmf["training_memory_floor_gb"]


def test_a_method_whose_floor_does_not_fit_is_skipped_with_the_reason_and_not_run(monkeypatch):
    import cmfnet.commands.bench.model_step as model_step

    def never(*args, **kwargs):
        raise AssertionError("a skipped method was measured")

    monkeypatch.setattr(model_step, "measure_model_isolated", never)
    overrides = ["methods=[mtrans_edsr]", "methods_memory_fraction=1e-9", "experiment=smoke"]
    result = measure_methods(compose_bench_config(overrides), overrides, "cpu")
    assert [row["method"] for row in result["rows"]] == ["cmfnet", "mtrans_edsr"]
    assert all(row["skipped"].startswith("training needs at least") for row in result["rows"])
    assert result["rows"][1]["params_ratio"] == pytest.approx(
        result["rows"][1]["params"] / result["rows"][0]["params"]
    )


def test_bench_refuses_a_memory_fraction_outside_zero_to_one(capsys):
    assert main(["bench", "methods=[edsr]", "methods_memory_fraction=1.5"]) == 2
    assert "methods_memory_fraction must be in (0, 1], got 1.5" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_methods_times_each_method_beside_the_reference(tmp_path, capsys):
    out = tmp_path / "methods.json"
    overrides = [
        "methods=[unet_swinir]",
        "experiment=smoke",
        "batch=2",
        "warmup_steps=0",
        "timed_steps=1",
        f"json={out}",
    ]
    assert main(["bench", *overrides]) == 0
    result = json.loads(out.read_text())["methods"]
    reference, swinir = result["rows"]
    assert (result["reference"], reference["method"], swinir["method"]) == (
        "cmfnet",
        "cmfnet",
        "unet_swinir",
    )
    for row in (reference, swinir):
        assert row["train_samples_per_s"] > 0 and row["peak_memory_mb"] > 0
    assert reference["train_ratio"] == 1.0
    assert swinir["train_ratio"] == pytest.approx(
        swinir["train_samples_per_s"] / reference["train_samples_per_s"]
    )
    assert "unet_swinir" in capsys.readouterr().out
