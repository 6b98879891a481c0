"""Scorings (cmfnet/mri/scoring.py, conf/scoring/): the release's scoring against values computed by
hand, further test-time scorings (module.also_score), their configs, and `cmfnet report
--scoring`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from hydra import compose, initialize_config_dir
from torch import nn

from cmfnet.commands.report.cli import build_report
from cmfnet.commands.report.load import load_report
from cmfnet.data.transforms import JointSample
from cmfnet.lit.module import JointRecSRModule
from cmfnet.mri.metrics import nmse, psnr, ssim
from cmfnet.mri.scoring import Scoring

SCALE, LR = 2, 8


class FixedOutputs(nn.Module):
    """A stand-in network returning given normalised outputs (rec, sr) for each batch in turn."""

    def __init__(self, outputs: list[tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.outputs = list(outputs)
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, target_input, aux_input):
        return self.outputs.pop(0)


def batches(seed: int = 0):
    """Two batches of two slices of one volume, with HR targets that stick out above
    scale * (mean + 6 std) in some pixels, and the network outputs for them. Samples carry the
    volume's (unclamped, de-normalised) target maxima, as the datasets give them."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for first in (0, 2):
        mean = torch.rand(2, generator=gen) + 0.5
        std = torch.rand(2, generator=gen) * 0.1 + 0.05
        sr_target = torch.randn(2, 1, LR * SCALE, LR * SCALE, generator=gen)
        sr_target[:, :, :3, :3] = 40.0  # far above +6 std even after the gain of SCALE
        sr_target[:, :, -2:, -2:] = -30.0  # far below -6 std
        rec_target = torch.randn(2, 1, LR, LR, generator=gen)
        sample = JointSample(
            target_input=torch.zeros(2, 1, LR, LR),
            aux_input=torch.zeros(2, 1, LR, LR),
            rec_target=rec_target,
            sr_target=sr_target,
            mask=torch.ones(2, LR),
            mean=mean,
            std=std,
            sr_max=torch.zeros(2),
            rec_max=torch.zeros(2),
            fname=["vol.h5", "vol.h5"],
            slice_idx=[first, first + 1],
        )
        outputs = (
            rec_target + 0.3 * torch.randn(2, 1, LR, LR, generator=gen),
            sr_target.clamp(-6, 6) + 0.3 * torch.randn(2, 1, LR * SCALE, LR * SCALE, generator=gen),
        )
        out.append((sample, outputs))
    maxima = {
        field: max(
            float(
                (
                    getattr(sample, target) * sample.std.view(-1, 1, 1, 1)
                    + sample.mean.view(-1, 1, 1, 1)
                ).max()
            )
            for sample, _ in out
        )
        for field, target in (("sr_max", "sr_target"), ("rec_max", "rec_target"))
    }
    return [
        (sample._replace(**{k: torch.full((2,), v) for k, v in maxima.items()}), outputs)
        for sample, outputs in out
    ]


def run_test_stage(scoring: Scoring, also_score: dict | None = None) -> dict:
    return scored_module(scoring, also_score).results["test"]


def scored_module(scoring: Scoring, also_score: dict | None = None) -> JointRecSRModule:
    """A module whose test stage scored :func:`batches`."""
    data = batches()
    module = JointRecSRModule(
        FixedOutputs([outputs for _, outputs in data]),
        loss=lambda rec, sr, rt, st: type("L", (), {"total": (sr - st).abs().mean()})(),
        scoring=scoring,
        also_score=also_score,
    )
    module.on_test_epoch_start = lambda: None  # no trainer: choose no example slices
    module._start_eval("test")
    module.example_images = []
    for sample, _ in data:
        module._eval_step(sample, "test")
    module._finish_eval("test")
    return module


def by_hand(scoring: str) -> dict[str, float]:
    """SR scores of :func:`batches` worked out step by step with numpy; SSIM's data range is the
    unclamped target's max (known before the volume is scored), PSNR's the scored target's."""
    preds, targets = [], []
    for sample, (_, sr) in batches():
        mean = sample.mean.numpy().reshape(-1, 1, 1).astype(np.float64)
        std = sample.std.numpy().reshape(-1, 1, 1).astype(np.float64)
        pred = sr[:, 0].numpy() * std + mean
        target = sample.sr_target[:, 0].numpy() * std + mean
        if scoring == "release":
            normalised = (target - SCALE * mean) / (SCALE * std)  # the release's statistics
            target = np.clip(normalised, -6, 6) * (SCALE * std) + SCALE * mean
        preds.append(pred.astype(np.float32))
        targets.append(target.astype(np.float32))
    gt, pred = np.concatenate(targets), np.concatenate(preds)
    data_range = float(batches()[0][0].sr_max[0])
    return {
        "sr_psnr": psnr(gt, pred),
        "sr_ssim": ssim(gt, pred, maxval=data_range),
        "sr_nmse": nmse(gt, pred),
    }


def test_release_scoring_equals_the_release_steps_worked_by_hand():
    release = Scoring("release", outputs=["sr"], target_clamp=6.0, stats_gain=SCALE)
    got = run_test_stage(release)
    expected = by_hand("release")
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-5), key
    assert "rec_psnr" not in got  # the release scores the SR output only
    assert got["sr_max_mismatches"] == 1  # the clamp lowered the volume's max
    fastmri = run_test_stage(Scoring())
    assert fastmri["sr_max_mismatches"] == fastmri["rec_max_mismatches"] == 0
    assert abs(fastmri["sr_psnr"] - got["sr_psnr"]) > 0.5  # the clamp bit: the test can fail
    assert fastmri["sr_psnr"] == pytest.approx(by_hand("fastmri")["sr_psnr"], rel=1e-5)


def test_also_score_gives_the_same_numbers_as_scoring_that_way():
    release = Scoring("release", outputs=["sr"], target_clamp=6.0, stats_gain=SCALE)
    both = run_test_stage(Scoring(), also_score={"release": release})
    alone = run_test_stage(release)
    assert both["scorings"]["release"] == alone
    assert both["sr_psnr"] == run_test_stage(Scoring())["sr_psnr"]
    assert "rec_psnr" in both


def test_the_test_stage_keeps_every_volumes_scores_in_each_scoring():
    release = Scoring("release", outputs=["sr"], target_clamp=6.0, stats_gain=SCALE)
    module = scored_module(Scoring(), also_score={"release": release})
    kept = module.volume_scores["test"]
    assert sorted(kept) == [("fastmri", "rec"), ("fastmri", "sr"), ("release", "sr")]
    results = module.results["test"]
    for metric in ("psnr", "ssim", "nmse"):  # one volume: its scores are the means
        assert kept[("fastmri", "sr")]["vol.h5"][metric] == results[f"sr_{metric}"]
        assert kept[("fastmri", "rec")]["vol.h5"][metric] == results[f"rec_{metric}"]
        assert (
            kept[("release", "sr")]["vol.h5"][metric]
            == results["scorings"]["release"][f"sr_{metric}"]
        )


def test_target_clamp_bounds_by_hand():
    scoring = Scoring("release", outputs=["sr"], target_clamp=6.0, stats_gain=4)
    mean, std = torch.tensor(1.0).view(1, 1, 1, 1), torch.tensor(0.5).view(1, 1, 1, 1)
    target = torch.tensor([-100.0, -8.0, 0.0, 15.0, 16.0, 17.0, 100.0]).view(1, 1, 1, -1)
    # 4 * (1 - 6 * 0.5) = -8, 4 * (1 + 6 * 0.5) = 16
    assert scoring.target(target, mean, std).flatten().tolist() == [
        -8.0,
        -8.0,
        0.0,
        15.0,
        16.0,
        16.0,
        16.0,
    ]
    assert Scoring(output_floor=0.0).output(torch.tensor([-1.0, 2.0])).tolist() == [0.0, 2.0]


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        ({"outputs": []}, "scoring.outputs"),
        ({"outputs": ["sr", "hr"]}, "scoring.outputs"),
        ({"target_clamp": 0.0}, "scoring.target_clamp"),
        ({"stats_gain": -1.0}, "scoring.stats_gain"),
    ],
)
def test_impossible_scorings_are_refused_naming_the_setting(kwargs, setting):
    with pytest.raises(ValueError, match=setting):
        Scoring(**kwargs)


def test_scoring_configs_compose_and_release_follows_the_scale():
    import hydra

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for scale in (2, 4):
            cfg = compose("train", overrides=["scoring=release", f"scale={scale}"])
            release = hydra.utils.instantiate(cfg.scoring)
            assert (release.name, release.outputs, release.target_clamp, release.stats_gain) == (
                "release",
                ("sr",),
                6.0,
                float(scale),
            )
        default = hydra.utils.instantiate(compose("train").scoring)
        assert (default.name, default.outputs, default.target_clamp) == (
            "fastmri",
            ("sr", "rec"),
            None,
        )
        hr160 = compose("train", overrides=["experiment=hr160", "+cell=x2r4"])
        also = hydra.utils.instantiate(hr160.module.also_score)
        assert also["release"].stats_gain == 2.0 and hr160.data.synthesize.hr_size == 160


def write_run(sweep: Path, name: str, model: str, record: dict) -> None:
    job = sweep / name
    job.mkdir(parents=True)
    base = {"model": model, "data": "synthetic", "mask": "random", "scale": 4, "accel": 4}
    (job / "metrics.json").write_text(
        json.dumps({**base, "seed": 42, "status": "completed", **record})
    )


def scores(psnr_value: float, outputs=("sr", "rec")) -> dict:
    return {
        f"{out}_{metric}": value
        for out in outputs
        for metric, value in (("psnr", psnr_value), ("ssim", 0.5), ("nmse", 0.1))
    }


def test_report_scoring_picks_the_numbers_of_that_scoring(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(
        sweep,
        "0_model=cmfnet",
        "cmfnet",
        {**scores(30.0), "scoring": "fastmri", "scorings": {"release": scores(31.5, ["sr"])}},
    )
    write_run(
        sweep,
        "1_model=unet_edsr_mc",
        "unet_edsr_mc",
        {**scores(28.0, ["sr"]), "scoring": "release"},
    )
    own = {run.model: run.metrics["sr_psnr"] for run in load_report([sweep]).runs}
    assert own == {"cmfnet": 30.0, "unet_edsr_mc": 28.0}
    release = {run.model: run.metrics for run in load_report([sweep], "release").runs}
    assert release["cmfnet"]["sr_psnr"] == 31.5 and release["cmfnet"]["rec_psnr"] is None
    assert release["unet_edsr_mc"]["sr_psnr"] == 28.0
    with pytest.raises(ValueError, match="0_model=cmfnet: not scored with 'fastmri_nonneg'"):
        load_report([sweep], "fastmri_nonneg")

    written = build_report([sweep], tmp_path / "out", scoring="release", name="release")
    text = written["markdown"].read_text()
    assert "`release`: the CMF-Net release's" in text
    assert "31.50" in text and "Not scored in this scoring." in text
