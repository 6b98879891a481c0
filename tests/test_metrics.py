import numpy as np
import pytest

evaluate = pytest.importorskip("fastmri.evaluate")

from cmfnet.mri import metrics  # noqa: E402


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_fastmri_evaluate(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(2, 6)), int(rng.integers(20, 48)), int(rng.integers(20, 48)))
    gt = rng.random(shape).astype(np.float32) * rng.uniform(1e-5, 1e3)
    pred = (gt + rng.normal(0, gt.std() * rng.uniform(0.05, 0.5), shape)).astype(np.float32)
    for name in ("nmse", "psnr", "ssim"):
        ours = getattr(metrics, name)(gt, pred)
        ref = float(np.asarray(getattr(evaluate, name)(gt, pred)).reshape(-1)[0])
        assert isinstance(ours, float)
        assert abs(ours - ref) <= 1e-6 * max(1.0, abs(ref)), name
    assert (
        abs(metrics.psnr(gt, pred, maxval=2.0) - float(evaluate.psnr(gt, pred, maxval=2.0))) < 1e-6
    )


def test_volume_metrics_group_slices_back_into_volumes():
    rng = np.random.default_rng(3)
    volumes = {name: rng.random((3, 16, 16)).astype(np.float32) for name in ("a.h5", "b.h5")}
    preds = {
        name: v + rng.normal(0, 0.05, v.shape).astype(np.float32) for name, v in volumes.items()
    }
    collector = metrics.VolumeMetrics()
    for i in (2, 0, 1):  # out of order, interleaved
        for name in volumes:
            collector.add(name, i, volumes[name][i], preds[name][i])
    summary = collector.compute()
    per_volume = [metrics.psnr(volumes[n], preds[n]) for n in sorted(volumes)]
    assert summary["psnr"]["mean"] == pytest.approx(np.mean(per_volume))
    assert summary["psnr"]["std"] == pytest.approx(np.std(per_volume, ddof=1))
    assert summary["per_volume"]["a.h5"]["ssim"] == pytest.approx(
        metrics.ssim(volumes["a.h5"], preds["a.h5"])
    )


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.nmse(np.zeros((1, 4, 4)), np.zeros((1, 4, 5)))


def test_the_score_keys_are_every_output_and_metric_each_followed_by_its_std():
    """metrics.json, the sweep's results.csv and the report all read these keys
    (cmfnet.mri.metrics)."""
    assert metrics.METRIC_KEYS == (
        "sr_psnr",
        "sr_psnr_std",
        "sr_ssim",
        "sr_ssim_std",
        "sr_nmse",
        "sr_nmse_std",
        "rec_psnr",
        "rec_psnr_std",
        "rec_ssim",
        "rec_ssim_std",
        "rec_nmse",
        "rec_nmse_std",
    )
    assert metrics.SCORE_KEYS == metrics.METRIC_KEYS[::2]
    assert set(metrics.METRICS) == set(metrics.METRIC_LABELS)
