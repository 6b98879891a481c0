"""StreamingVolumeMetrics (cmfnet.mri.metrics) against fastMRI's metrics and the numpy collector."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cmfnet.mri import metrics

evaluate = pytest.importorskip("fastmri.evaluate")

#: agreement asked of the streaming metrics: relative for PSNR and NMSE, absolute for SSIM
RTOL = 1e-6
SSIM_ATOL = {np.float32: 1e-4, np.float64: 1e-6}


def random_volumes(seed: int, dtype, count: int = 4, shape=(40, 48)) -> dict:
    """``{name: (target, prediction)}``: volumes of 3-6 slices of a smooth non-negative image
    plus noise at a random intensity scale (fastMRI's is about 1e-4), predictions noisy and
    partly negative."""
    rng = np.random.default_rng(seed)
    volumes = {}
    for v in range(count):
        slices = int(rng.integers(3, 7))
        yy, xx = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
        blob = np.exp(-((xx - rng.uniform(-0.3, 0.3)) ** 2 + yy**2) * rng.uniform(1, 4))
        scale = 10 ** rng.uniform(-5, 2)
        gt = scale * np.abs(blob + rng.normal(0, 0.05, (slices, *shape)))
        pred = gt + scale * rng.normal(0, rng.uniform(0.02, 0.3), gt.shape)
        volumes[f"file{v:03d}.h5"] = (gt.astype(dtype), pred.astype(dtype))
    return volumes


def slice_list(volumes: dict, seed: int) -> list[tuple[str, int]]:
    """Every (name, slice index) of ``volumes`` in a shuffled order."""
    keys = [(name, i) for name, (gt, _) in volumes.items() for i in range(gt.shape[0])]
    order = np.random.default_rng(seed).permutation(len(keys))
    return [keys[k] for k in order]


def stream(volumes: dict, keys, batch_size: int = 3, maxval=None) -> metrics.StreamingVolumeMetrics:
    """Score the slices ``keys`` in batches of ``batch_size``; each slice's data range is its
    volume's maximum unless ``maxval`` ({name: value}) says otherwise."""
    acc = metrics.StreamingVolumeMetrics()
    for start in range(0, len(keys), batch_size):
        batch = keys[start : start + batch_size]
        gt = np.stack([volumes[name][0][i] for name, i in batch])
        pred = np.stack([volumes[name][1][i] for name, i in batch])
        ranges = [(maxval or {}).get(name, float(volumes[name][0].max())) for name, _ in batch]
        acc.update(
            [name for name, _ in batch],
            [i for _, i in batch],
            torch.from_numpy(gt),
            torch.from_numpy(pred),
            torch.tensor(ranges, dtype=torch.float64),
        )
    return acc


def assert_scores_close(ours: dict, ref: dict, dtype) -> None:
    """Per-volume scores: PSNR and NMSE to :data:`RTOL`, SSIM to :data:`SSIM_ATOL`."""
    assert sorted(ours) == sorted(ref)
    for name in ref:
        for metric in ("psnr", "nmse"):
            assert ours[name][metric] == pytest.approx(ref[name][metric], rel=RTOL), (name, metric)
        assert ours[name]["ssim"] == pytest.approx(ref[name]["ssim"], abs=SSIM_ATOL[dtype]), name


def fastmri_ssim(gt: np.ndarray, pred: np.ndarray, maxval=None) -> float:
    """``fastmri.evaluate.ssim`` as a float (it returns an array of one value)."""
    return float(np.asarray(evaluate.ssim(gt, pred, maxval=maxval)).reshape(-1)[0])


def flat(per_volume: dict) -> dict:
    """``{(name, metric): value}`` of ``{name: {metric: value}}`` (pytest.approx is flat)."""
    return {(name, k): v for name, scores in per_volume.items() for k, v in scores.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1])
def test_streamed_scores_equal_fastmri_evaluate(dtype, seed):
    volumes = random_volumes(seed, dtype)
    ours = stream(volumes, slice_list(volumes, seed)).compute()["per_volume"]
    ref = {}
    for name, (gt, pred) in volumes.items():
        ref[name] = {
            "psnr": float(evaluate.psnr(gt, pred)),
            "ssim": fastmri_ssim(gt, pred),
            # fastMRI's formula on exact copies: its float32 norm rounds in float32 (4e-6
            # relative at 35 x 320 x 320); the streamed sums are float64
            "nmse": float(evaluate.nmse(gt.astype(np.float64), pred.astype(np.float64))),
        }
    assert_scores_close(ours, ref, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_streamed_summary_equals_the_numpy_collector(dtype):
    volumes = random_volumes(2, dtype, count=5)
    keys = slice_list(volumes, 2)
    numpy_collector = metrics.VolumeMetrics()
    for name, i in keys:
        numpy_collector.add(name, i, volumes[name][0][i], volumes[name][1][i])
    ref = numpy_collector.compute()
    ours = stream(volumes, keys, batch_size=4).compute()
    assert_scores_close(ours["per_volume"], ref["per_volume"], dtype)
    for metric in metrics.METRICS:
        tol = {"abs": SSIM_ATOL[dtype]} if metric == "ssim" else {"rel": 1e-5}
        assert ours[metric]["mean"] == pytest.approx(ref[metric]["mean"], **tol)
        assert ours[metric]["std"] == pytest.approx(ref[metric]["std"], **tol)


def test_the_order_and_batching_of_slices_do_not_change_the_scores():
    volumes = random_volumes(3, np.float32)
    one = stream(volumes, slice_list(volumes, 0), batch_size=1).reduce().per_volume()
    other = stream(volumes, slice_list(volumes, 1), batch_size=7).reduce().per_volume()
    assert flat(one) == pytest.approx(flat(other), rel=1e-12)


def test_a_slice_scored_twice_counts_once():
    volumes = random_volumes(4, np.float32)
    keys = slice_list(volumes, 4)
    once = stream(volumes, keys).reduce()
    twice = stream(volumes, keys + keys[:5] + keys[:2]).reduce()
    np.testing.assert_array_equal(twice.slices, once.slices)
    assert flat(twice.per_volume()) == pytest.approx(flat(once.per_volume()), rel=1e-12)
    assert list(once.slices) == [volumes[name][0].shape[0] for name in once.names]


def test_ssim_uses_the_advance_range_and_psnr_the_observed_maximum():
    """With a wrong advance range, SSIM is fastMRI's at that range, PSNR still at the scored
    volume's maximum, and the volume is named as a mismatch."""
    volumes = random_volumes(5, np.float64, count=2)
    wrong = "file001.h5"
    given = 2 * float(volumes[wrong][0].max())
    sums = stream(volumes, slice_list(volumes, 5), maxval={wrong: given}).reduce()
    gt, pred = volumes[wrong]
    scores = sums.per_volume()[wrong]
    assert scores["ssim"] == pytest.approx(fastmri_ssim(gt, pred, maxval=given), abs=1e-6)
    assert scores["psnr"] == pytest.approx(float(evaluate.psnr(gt, pred)), rel=RTOL)
    assert sums.max_mismatches() == [wrong]


def test_a_range_off_by_float32_rounding_is_no_mismatch():
    volumes = random_volumes(6, np.float32, count=2)
    rounded = {name: float(gt.max()) * (1 + 3e-7) for name, (gt, _) in volumes.items()}
    assert stream(volumes, slice_list(volumes, 6), maxval=rounded).reduce().max_mismatches() == []


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda gt: gt.__setitem__((0, 1, 1), np.nan), "holds NaN or inf"),
        (lambda gt: gt.fill(0), "no positive value"),
    ],
)
def test_an_unscorable_target_is_named(spoil, message):
    volumes = random_volumes(7, np.float32, count=2)
    spoil(volumes["file001.h5"][0])
    sums = stream(volumes, slice_list(volumes, 7), maxval={"file001.h5": 1.0}).reduce()
    with pytest.raises(ValueError, match=f"file001.h5: .*{message}"):
        sums.per_volume()


@pytest.mark.parametrize("missing", [0.0, float("nan")])
def test_a_missing_advance_range_is_named(missing):
    volumes = random_volumes(8, np.float32, count=2)
    sums = stream(volumes, slice_list(volumes, 8), maxval={"file000.h5": missing}).reduce()
    with pytest.raises(ValueError, match="file000.h5: .*compute_volume_maxima"):
        sums.compute()


def test_nothing_scored_is_an_empty_result():
    sums = metrics.StreamingVolumeMetrics().reduce()
    assert len(sums) == 0
    with pytest.raises(ValueError, match="no slices were collected"):
        sums.compute()


def test_update_refuses_mismatched_batches():
    acc = metrics.StreamingVolumeMetrics()
    image = torch.ones(2, 8, 8)
    with pytest.raises(ValueError, match="one shape"):
        acc.update(["a", "a"], [0, 1], image, torch.ones(2, 8, 9), torch.ones(2))
    with pytest.raises(ValueError, match="smaller than SSIM"):
        acc.update(["a", "a"], [0, 1], torch.ones(2, 6, 8), torch.ones(2, 6, 8), torch.ones(2))
    with pytest.raises(ValueError, match="2 names"):
        acc.update(["a"], [0, 1], image, image, torch.ones(2))


def _score_share(rank: int, world: int, init_file: str, out_file: str, volumes, shares) -> None:
    """One DDP rank: score its share of the slices, reduce, and (rank 0) save the result."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        sums = stream(volumes, shares[rank]).reduce()
        if rank == 0:
            torch.save(
                {"names": sums.names, "slices": sums.slices, "scores": sums.per_volume()},
                out_file,
            )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes: about 8 s on 2 busy cores
def test_two_ranks_reduce_to_the_single_process_scores(tmp_path):
    """Two CPU processes (gloo) each score part of the slices: volumes split across ranks, one
    volume on one rank only, and padding that repeats slices of the other rank."""
    volumes = random_volumes(9, np.float32, count=5)
    keys = slice_list(volumes, 9)
    only_first = [k for k in keys if k[0] == "file004.h5"]
    shared = [k for k in keys if k[0] != "file004.h5"]
    shares = [shared[0::2] + only_first, shared[1::2] + shared[:3]]
    out = tmp_path / "reduced.pt"
    mp.spawn(
        _score_share,
        args=(2, str(tmp_path / "init"), str(out), volumes, shares),
        nprocs=2,
        join=True,
    )
    reduced = torch.load(out, weights_only=False)
    single = stream(volumes, keys).reduce()
    assert reduced["names"] == single.names
    np.testing.assert_array_equal(reduced["slices"], single.slices)
    assert flat(reduced["scores"]) == pytest.approx(flat(single.per_volume()), rel=1e-12)


@pytest.mark.parametrize("cache_lowres", [True, False])
def test_items_carry_the_maxima_of_the_targets_scored(fastmri_pairs, cache_lowres):
    """sr_max/rec_max are the maxima over the volume's slices that the dataset yields (pair 1's
    target file has a slice more than its auxiliary: not in it) of the de-normalised targets,
    to float32 rounding, with and without the cache; 0 before they are computed."""
    from cmfnet.data.fastmri import FastMRIPairDataset
    from cmfnet.data.transforms import JointRecSRTransform
    from cmfnet.mri.masks import RandomMaskFunc

    data = FastMRIPairDataset(
        fastmri_pairs / "singlecoil_val",
        fastmri_pairs / "pairs.csv",
        scale=2,
        transform=JointRecSRTransform(RandomMaskFunc([0.08], [4], seed=0), True),
        cache_lowres=cache_lowres,
    )
    assert float(data[0].sr_max) == float(data[0].rec_max) == 0.0
    data.compute_volume_maxima()
    samples = [data[i] for i in range(len(data))]
    for name in {s.fname for s in samples}:
        volume = [s for s in samples if s.fname == name]
        for field, target in (("sr_max", "sr_target"), ("rec_max", "rec_target")):
            observed = max(float((getattr(s, target) * s.std + s.mean).max()) for s in volume)
            for s in volume:
                assert float(getattr(s, field)) == pytest.approx(observed, rel=metrics.MAX_RTOL)
    acc = metrics.StreamingVolumeMetrics()
    for s in samples:
        target = (s.sr_target * s.std + s.mean)[0]
        acc.update([s.fname], [s.slice_idx], target[None], target[None] * 0.9, s.sr_max[None])
    assert acc.reduce().max_mismatches() == []
    assert len(data._cache) == (len(data) if cache_lowres else 0)


@pytest.mark.slow  # two measuring processes: about 8 s on 2 busy cores
def test_bench_validation_measures_both_paths_on_the_sizes_given(tmp_path, capsys):
    """`cmfnet bench validation=true`: the earlier and the streaming path on one simulated set,
    each holding what it should (every slice's images, or 7 float64 numbers a slice)."""
    import json

    from cmfnet.cli import main

    out = tmp_path / "bench.json"
    settings = ["validation_volumes=2", "validation_slices=3", "validation_hr_size=32"]
    assert main(["bench", "validation=true", *settings, "batch=4", "scale=4", f"json={out}"]) == 0
    result = json.loads(out.read_text())["validation"]
    assert (result["slices"], result["sr_size"], result["rec_size"]) == (6, [32, 32], [8, 8])
    earlier, streaming = result["earlier"], result["streaming"]
    images = 6 * 2 * (32 * 32 + 8 * 8) * 4  # slices x (target, prediction) x (SR + rec) float32
    assert earlier["state_mb"] * 2**20 == images
    assert streaming["state_mb"] * 2**20 == 2 * 6 * len(metrics.SLICE_STATS) * 8
    assert earlier["pickled_mb"] * 2**20 > images
    for row in (earlier, streaming):
        assert row["slices_per_s"] > 0 and row["step_s"] > 0 and row["end_s"] > 0
    assert result["speed_ratio"] == pytest.approx(
        streaming["slices_per_s"] / earlier["slices_per_s"]
    )
    assert result["largest_ssim_difference"] < 1e-4
    assert result["largest_relative_psnr_nmse_difference"] < 1e-5
    assert "streaming / earlier" in capsys.readouterr().out


def test_bench_validation_refuses_a_rec_side_below_the_ssim_window(capsys):
    from cmfnet.cli import main

    assert main(["bench", "validation=true", "validation_hr_size=24", "scale=4"]) == 2
    assert "validation_hr_size=24: scale=4 must divide it" in capsys.readouterr().err
