"""`cmfnet predict`, `cmfnet evaluate` and safe checkpoint loading.

Most tests use a checkpoint written in-process (a tiny, untrained CMF-Net in the layout that
training writes); one slow test trains with `run.py experiment=smoke` and checks that the
predictions reproduce the metrics `trainer.test` recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import CONF_DIR, REPO, CodeOnUnpickle
from omegaconf import OmegaConf

from cmfnet.cli import main
from cmfnet.data.fastmri import FastMRIPairDataset
from cmfnet.data.synth import generate_dataset
from cmfnet.data.transforms import JointRecSRTransform
from cmfnet.mri.kspace import center_crop, fft2c, ifft2c
from cmfnet.mri.masks import RandomMaskFunc, seed_from_name
from cmfnet.mri.metrics import nmse, psnr, ssim
from cmfnet.runs.checkpoint import CheckpointError, build_model_from_checkpoint, load_checkpoint
from cmfnet.runs.errors import DataError
from cmfnet.runs.ownership import MARKER, owner_kind

SCALE = 4
HR = 32


def tiny_cmfnet_config() -> dict:
    """The resolved `model=cmfnet experiment=smoke` node at scale 4."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["model=cmfnet", "experiment=smoke", f"scale={SCALE}"])
    return OmegaConf.to_container(cfg.model, resolve=True)


def run_config() -> dict:
    return {
        "model": tiny_cmfnet_config(),
        "scale": SCALE,
        "accel": 4,
        "center_fraction": 0.08,
        "seed": 42,
        "mask": {
            "_target_": "cmfnet.mri.masks.RandomMaskFunc",
            "center_fractions": [0.08],
            "accelerations": [4],
            "seed": 42,
        },
        "data": {"clamp": 6.0, "batch_size": 2, "eval_batch_size": 2},
    }


def save_checkpoint(path: Path, model: torch.nn.Module, config: dict) -> Path:
    """A checkpoint in the layout training writes: `model.`-prefixed weights plus the run config."""
    state = {f"model.{name}": tensor for name, tensor in model.state_dict().items()}
    torch.save({"epoch": 0, "state_dict": state, "cmfnet_config": config}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from cmfnet.models import build_model

    torch.manual_seed(0)
    config = run_config()
    return save_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny.ckpt", build_model(config["model"]), config
    )


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """Three synthetic test pairs (PD aux, T2 target) of 2 slices, 32x32 HR, 36 columns."""
    return generate_dataset(
        tmp_path_factory.mktemp("data") / "synth",
        n_train=0,
        n_val=0,
        n_test=3,
        slices=2,
        hr_size=HR,
        width=36,
        progress=False,
    )


def split_dir(data_root: Path) -> Path:
    return data_root / "singlecoil_test"


def target_names(data_root: Path) -> list[str]:
    return sorted(p.name for p in split_dir(data_root).glob("*_pdfs.h5"))


def cli(*args: str) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def predictions(checkpoint, data_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pred") / "out"
    assert cli("predict", checkpoint, "--data", split_dir(data_root), "--out", out, "--quiet") == 0
    return out


# --------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------


def test_predict_writes_one_file_per_target_with_shapes_and_attrs(
    predictions, data_root, checkpoint
):
    names = sorted(p.name for p in predictions.iterdir())
    assert names == sorted([*target_names(data_root), MARKER])  # no aux, no temp files
    for name in target_names(data_root):
        with (
            h5py.File(predictions / name, "r") as out,
            h5py.File(split_dir(data_root) / name, "r") as src,
        ):
            assert (
                out["reconstruction"].shape == (2, HR, HR)
                and out["reconstruction"].dtype == np.float32
            )
            assert out["reconstruction_lr"].shape == (2, HR // SCALE, HR // SCALE)
            assert np.isfinite(out["reconstruction"][()]).all()
            for key, value in src.attrs.items():
                np.testing.assert_array_equal(out.attrs[key], value)
            assert out.attrs["model"] == "cmfnet.models.CMFNet"
            assert json.loads(out.attrs["model_config"])["width"] == tiny_cmfnet_config()["width"]
            assert (out.attrs["scale"], out.attrs["accel"]) == (SCALE, 4)
            assert out.attrs["checkpoint"] == str(checkpoint.resolve())
            assert out.attrs["undersampling"] == "simulated"


def test_predicted_slices_equal_the_model_on_the_training_degradation(
    predictions, data_root, checkpoint
):
    model, config = build_model_from_checkpoint(checkpoint)
    mask_func = RandomMaskFunc([0.08], [4], seed=config["seed"])
    dataset = FastMRIPairDataset(
        split_dir(data_root),
        data_root / "singlecoil_test_split_less.csv",
        SCALE,
        JointRecSRTransform(mask_func, seed_masks_by_name=True),
    )
    for index in (0, len(dataset) - 1):
        sample = dataset[index]
        with torch.no_grad():
            rec, sr = model(sample.target_input[None], sample.aux_input[None])
        with h5py.File(predictions / sample.fname, "r") as out:
            stored_sr = out["reconstruction"][sample.slice_idx]
            stored_rec = out["reconstruction_lr"][sample.slice_idx]
        np.testing.assert_allclose(
            stored_sr, (sr * sample.std + sample.mean)[0, 0].numpy(), rtol=1e-5, atol=1e-9
        )
        np.testing.assert_allclose(
            stored_rec, (rec * sample.std + sample.mean)[0, 0].numpy(), rtol=1e-5, atol=1e-9
        )


def write_undersampled_copy(source: Path, dest: Path, accel: int = 4) -> np.ndarray:
    """fastMRI test layout: k-space zeroed at unsampled columns, a (cols,) `mask`, no target."""
    with h5py.File(source, "r") as src:
        kspace = src["kspace"][()]
        header = src["ismrmrd_header"][()]
        attrs = dict(src.attrs)
    cols = kspace.shape[-1]
    mask, _ = RandomMaskFunc([0.08], [accel])((1, 1, cols, 2), seed=seed_from_name(dest.name))
    columns = mask.reshape(-1).numpy()
    with h5py.File(dest, "w") as hf:
        hf.create_dataset("kspace", data=(kspace * columns).astype(np.complex64))
        hf.create_dataset("mask", data=columns.astype(bool))
        hf.create_dataset("ismrmrd_header", data=header)
        hf.attrs.update({**attrs, "acceleration": accel})
    return columns


def normalise(image: np.ndarray, clamp: float = 6.0) -> tuple[torch.Tensor, float, float]:
    mean, std = float(image.mean()), float(image.std(ddof=1)) + 1e-11
    return (
        torch.from_numpy(np.clip((image - mean) / std, -clamp, clamp).astype(np.float32))[
            None, None
        ],
        mean,
        std,
    )


def test_predict_writes_all_volumes_or_none_with_ordinary_file_permissions(
    checkpoint, data_root, predictions, tmp_path, capsys
):
    umask = os.umask(0)
    os.umask(umask)
    assert {oct(p.stat().st_mode & 0o777) for p in predictions.iterdir()} == {oct(0o666 & ~umask)}
    data = tmp_path / split_dir(data_root).name
    shutil.copytree(split_dir(data_root), data)
    shutil.copy(data_root / f"{data.name}_split_less.csv", tmp_path)
    last = data / target_names(data_root)[-1]  # volumes before it are predicted first
    with h5py.File(last, "r+") as hf:
        kspace = hf["kspace"][()]
        kspace[1, 0, 0] = np.nan
        hf["kspace"][...] = kspace
    out = tmp_path / "out"
    assert (
        cli("predict", checkpoint, "--data", data, "--out", out, "--quiet", "--batch-size", "1")
        == 2
    )
    assert f"{last}" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == [
        MARKER
    ]  # no volume left that looks like a finished prediction


def test_predict_undersampled_file_with_its_own_mask(checkpoint, data_root, tmp_path):
    folder = tmp_path / "singlecoil_challenge"
    folder.mkdir()
    aux_name = "synth_test_0000_pd.h5"
    shutil.copy(split_dir(data_root) / aux_name, folder / aux_name)
    write_undersampled_copy(
        split_dir(data_root) / "synth_test_0000_pdfs.h5", folder / "challenge_pdfs.h5"
    )
    (tmp_path / "singlecoil_challenge_split_less.csv").write_text(
        f"{aux_name},challenge_pdfs.h5,1.0\n"
    )
    out = tmp_path / "out"
    assert (
        cli("predict", checkpoint, "--data", folder, "--out", out, "--quiet") == 0
    )  # default CSV found

    # the documented input: |ifft2c(crop(fft2c(crop(ifft2c(kspace_us))), LR) / scale)|, no new mask
    with (
        h5py.File(folder / "challenge_pdfs.h5", "r") as hf,
        h5py.File(folder / aux_name, "r") as aux_file,
    ):
        kspace_us, aux_kspace = hf["kspace"][0], aux_file["kspace"][0]
    lr = (HR // SCALE, HR // SCALE)

    def lowres_magnitude(kspace):
        hr_image = center_crop(ifft2c(kspace), (HR, HR))
        return np.abs(ifft2c(center_crop(fft2c(hr_image), lr) / SCALE)).astype(np.float32)

    target_input, mean, std = normalise(lowres_magnitude(kspace_us))
    aux_input, _, _ = normalise(lowres_magnitude(aux_kspace))
    model, _ = build_model_from_checkpoint(checkpoint)
    with torch.no_grad():
        _, sr = model(target_input, aux_input)
    with h5py.File(out / "challenge_pdfs.h5", "r") as hf:
        assert hf["reconstruction"].shape == (2, HR, HR)
        assert hf.attrs["undersampling"] == "file" and hf.attrs["acceleration"] == 4
        np.testing.assert_allclose(
            hf["reconstruction"][0], (sr * std + mean)[0, 0].numpy(), rtol=1e-4, atol=1e-9
        )


def test_predict_refuses_an_undersampled_auxiliary(checkpoint, data_root, tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    write_undersampled_copy(split_dir(data_root) / "synth_test_0000_pd.h5", folder / "aux_pd.h5")
    shutil.copy(split_dir(data_root) / "synth_test_0000_pdfs.h5", folder / "t_pdfs.h5")
    (tmp_path / "pairs.csv").write_text("aux_pd.h5,t_pdfs.h5\n")
    assert (
        cli(
            "predict",
            checkpoint,
            "--data",
            folder,
            "--csv",
            tmp_path / "pairs.csv",
            "--out",
            tmp_path / "o",
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "aux_pd.h5" in err and "fully sampled" in err and len(err.splitlines()) == 1


def corrupt(path: Path, kind: str) -> None:
    """Damage a fastMRI file as a broken download or disk does: cut it in half, drop its
    k-space, or write NaN or a huge value (a flipped exponent bit) into slice 1."""
    if kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return
    with h5py.File(path, "r+") as hf:
        if kind == "missing_kspace":
            del hf["kspace"]
            return
        kspace = hf["kspace"][()]
        kspace[1, 0, 0] = np.nan if kind == "nan_kspace" else 1e30
        hf["kspace"][...] = kspace


@pytest.mark.parametrize("kind", ["nan_kspace", "truncated", "missing_kspace", "huge_kspace_value"])
def test_a_bad_file_fails_with_the_same_line_in_training_and_in_predict(
    kind, checkpoint, data_root, tmp_path, capsys
):
    """Also a target in fastMRI's test layout (its own mask, no HR target: training cannot read
    it) damaged the same way gives the same line, for its own path; a cut file's HDF5 message
    holds the file's size, so that one is compared for the fully sampled file only."""
    aux_name, target_name = "synth_test_0000_pd.h5", "synth_test_0000_pdfs.h5"
    layouts = ("fully_sampled",) if kind == "truncated" else ("fully_sampled", "test_layout")
    for layout in layouts:
        folder = tmp_path / layout
        folder.mkdir()
        shutil.copy(split_dir(data_root) / aux_name, folder)
        if layout == "fully_sampled":
            shutil.copy(split_dir(data_root) / target_name, folder)
        else:
            write_undersampled_copy(split_dir(data_root) / target_name, folder / target_name)
        corrupt(folder / target_name, kind)
        (folder / "pairs.csv").write_text(f"{aux_name},{target_name}\n")
    transform = JointRecSRTransform(RandomMaskFunc([0.08], [4], seed=0), seed_masks_by_name=True)
    with pytest.raises(DataError) as training:
        dataset = FastMRIPairDataset(
            tmp_path / "fully_sampled", tmp_path / "fully_sampled" / "pairs.csv", SCALE, transform
        )
        for index in range(len(dataset)):
            dataset[index]
    broken = tmp_path / "fully_sampled" / target_name
    assert str(training.value).startswith(f"{broken}: ") and "\n" not in str(training.value)
    for layout in layouts:
        folder = tmp_path / layout
        assert (
            cli(
                "predict",
                checkpoint,
                "--data",
                folder,
                "--csv",
                folder / "pairs.csv",
                "--out",
                tmp_path / f"out_{layout}",
                "--quiet",
            )
            == 2
        )
        line = str(training.value).replace(str(broken), str(folder / target_name))
        assert capsys.readouterr().err.strip() == f"cmfnet predict: error: {line}", layout


def test_predict_without_csv_or_into_the_data_folder_fails_clearly(
    checkpoint, data_root, tmp_path, capsys
):
    bare = tmp_path / "bare"
    bare.mkdir()
    assert cli("predict", checkpoint, "--data", bare, "--out", tmp_path / "o") == 2
    assert "bare_split_less.csv: pairing CSV not found" in capsys.readouterr().err
    assert (
        cli("predict", checkpoint, "--data", split_dir(data_root), "--out", split_dir(data_root))
        == 2
    )
    assert "would overwrite the inputs" in capsys.readouterr().err
    assert (
        cli(
            "predict",
            checkpoint,
            "--data",
            split_dir(data_root),
            "--out",
            tmp_path / "o",
            "--target-key",
            "nope",
        )
        == 2
    )
    assert "--target-key nope: no target file has that dataset" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_predict_out_refuses_a_users_folder_and_replaces_only_its_own_files(
    checkpoint, data_root, predictions, tmp_path, capsys
):
    mine = tmp_path / "mine"
    mine.mkdir()
    users = (
        mine / target_names(data_root)[0]
    )  # a user's file of the very name a prediction would take
    users.write_bytes(b"a user's own volume\n")
    assert cli("predict", checkpoint, "--data", split_dir(data_root), "--out", mine, "--quiet") == 2
    assert "holds files that cmfnet did not write" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == [
        users.name
    ] and users.read_bytes() == b"a user's own volume\n"
    assert owner_kind(predictions) == "predictions"
    assert (
        cli("predict", checkpoint, "--data", split_dir(data_root), "--out", predictions, "--quiet")
        == 0
    )


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------


def test_checkpoint_with_pickled_code_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.ckpt"
    torch.save(
        {"state_dict": {}, "cmfnet_config": run_config(), "payload": CodeOnUnpickle(marker)}, path
    )
    with pytest.raises(
        CheckpointError,
        match=r"evil\.ckpt: the checkpoint contains a pickled object .*_touch_marker.*refusing",
    ):
        load_checkpoint(path)
    assert cli("predict", path, "--data", tmp_path, "--out", tmp_path / "o") == 2
    assert "weights_only" in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.parametrize(
    "key, node",
    [
        ("model", {"_target_": "shutil.copy", "_args_": ["{source}", "{marker}"]}),
        (
            "model",
            {
                "_target_": "cmfnet.models.hydra.utils.call",
                "_args_": ["shutil.copy", "{source}", "{marker}"],
            },
        ),
        (
            "model",
            {
                **tiny_cmfnet_config(),
                "extra": {"_target_": "shutil.copy", "_args_": ["{source}", "{marker}"]},
            },
        ),
        (
            "model",
            {
                "_target_": "cmfnet.models.ReconstructThenSuperResolve",
                "reconstruction": {"_target_": "shutil.copy", "_args_": ["{source}", "{marker}"]},
            },
        ),
        ("mask", {"_target_": "shutil.copy", "_args_": ["{source}", "{marker}"]}),
        ("mask", {"_target_": "cmfnet.mri.masks.np.save", "_args_": ["{marker}", [1]]}),
    ],
)
def test_a_checkpoint_config_naming_foreign_code_is_refused_without_running_it(
    key, node, checkpoint, data_root, tmp_path, capsys
):
    """The checkpoint's config is data: its `_target_`s may name only cmfnet's own classes, or
    `cmfnet predict` would run whatever a downloaded checkpoint names."""
    marker, source = tmp_path / "code-ran", tmp_path / "source.txt"
    source.write_text("x")
    node = json.loads(
        json.dumps(node).replace("{source}", str(source)).replace("{marker}", str(marker))
    )
    state = load_checkpoint(checkpoint)
    path = tmp_path / "foreign.ckpt"
    torch.save(
        {"state_dict": state["state_dict"], "cmfnet_config": {**state["cmfnet_config"], key: node}},
        path,
    )
    assert (
        cli("predict", path, "--data", split_dir(data_root), "--out", tmp_path / "out", "--quiet")
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(f"cmfnet predict: error: {path}: cmfnet_config['{key}")  # or a node in it
        and "refusing" in err
    ), err
    assert len(err.splitlines()) == 1 and not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "checkpoint not found"),
        ("truncated", "not a readable torch checkpoint"),
        ("text", "not a readable torch checkpoint"),
        ("empty", "not a readable torch checkpoint"),
        ("tensor", "not a Lightning checkpoint"),
        ("plain_dict", "no 'state_dict'"),
        ("no_config", "no 'cmfnet_config'"),
    ],
)
def test_bad_checkpoints_give_one_line_errors_naming_the_file(kind, message, checkpoint, tmp_path):
    path = tmp_path / f"{kind}.ckpt"
    if kind == "truncated":
        data = checkpoint.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("epoch,loss\n1,0.5\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "tensor":
        torch.save(torch.ones(3), path)
    elif kind == "plain_dict":
        torch.save({"weights": torch.ones(3), "lr": 0.1}, path)
    elif kind == "no_config":
        torch.save({"state_dict": {"model.w": torch.ones(3)}}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


def test_weights_that_do_not_fit_the_architecture_are_reported(checkpoint, tmp_path):
    state = load_checkpoint(checkpoint)
    weights = dict(state["state_dict"])
    dropped = sorted(weights)[0]
    del weights[dropped]
    path = tmp_path / "mismatch.ckpt"
    torch.save({"state_dict": weights, "cmfnet_config": state["cmfnet_config"]}, path)
    with pytest.raises(
        CheckpointError,
        match=rf"mismatch\.ckpt: the weights do not fit .*1 missing \({dropped[len('model.') :]}",
    ):
        build_model_from_checkpoint(path)


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------


@pytest.fixture
def eval_folders(data_root, tmp_path) -> tuple[Path, Path]:
    """Targets (the three T2 volumes, one relabelled CORPD_FBK) and noisy predictions, one of
    them 4 pixels larger on each side so that fastMRI's centre crop matters."""
    targets, preds = tmp_path / "targets", tmp_path / "preds"
    targets.mkdir()
    preds.mkdir()
    rng = np.random.default_rng(1)
    for i, name in enumerate(target_names(data_root)):
        shutil.copy(split_dir(data_root) / name, targets / name)
        with h5py.File(targets / name, "r+") as hf:
            if i == 2:
                hf.attrs["acquisition"] = "CORPD_FBK"
            esc = hf["reconstruction_esc"][()]
        noisy = (esc + rng.normal(0, 0.1 * (i + 1) * esc.std(), esc.shape)).astype(np.float32)
        if i == 1:
            noisy = np.pad(noisy, ((0, 0), (4, 4), (4, 4)))
        with h5py.File(preds / name, "w") as hf:
            hf.create_dataset("reconstruction", data=noisy)
    return targets, preds


def fastmri_numbers(targets: Path, preds: Path, acquisition=None) -> dict:
    from fastmri.evaluate import evaluate

    args = argparse.Namespace(
        target_path=targets, predictions_path=preds, acquisition=acquisition, acceleration=None
    )
    metrics = evaluate(args, "reconstruction_esc")
    means = metrics.means()
    numbers = {m.lower(): float(np.squeeze(means[m])) for m in ("NMSE", "PSNR", "SSIM")}
    if len(metrics.metrics["NMSE"]) > 1:
        stds = metrics.stddevs()
        numbers.update(
            {f"{m.lower()}_std": float(np.squeeze(stds[m])) for m in ("NMSE", "PSNR", "SSIM")}
        )
    return numbers


def test_evaluate_matches_fastmri_overall_and_per_acquisition(eval_folders, tmp_path, capsys):
    targets, preds = eval_folders
    assert (
        cli(
            "evaluate",
            "--target",
            targets,
            "--predictions",
            preds,
            "--json",
            tmp_path / "scores.json",
        )
        == 0
    )
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()]
    assert rows == [
        ["acquisition", "volumes"],
        ["CORPDFS_FBK", "2"],
        ["CORPD_FBK", "1"],
        ["all", "3"],
    ]
    groups = json.loads((tmp_path / "scores.json").read_text())["groups"]
    assert {name: g["volumes"] for name, g in groups.items()} == {
        "CORPDFS_FBK": 2,
        "CORPD_FBK": 1,
        "all": 3,
    }
    for group, acquisition in (
        ("all", None),
        ("CORPDFS_FBK", "CORPDFS_FBK"),
        ("CORPD_FBK", "CORPD_FBK"),
    ):
        reference = fastmri_numbers(targets, preds, acquisition)
        for key, value in reference.items():
            assert groups[group][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (group, key)
    assert groups["CORPD_FBK"]["psnr_std"] is None
    assert groups["all"]["psnr_std"] > 0


def test_evaluate_errors_name_the_file(eval_folders, capsys):
    targets, preds = eval_folders
    first, second, third = sorted(p.name for p in targets.iterdir())
    (preds / third).unlink()
    assert cli("evaluate", "--target", targets, "--predictions", preds) == 2
    err = capsys.readouterr().err
    assert f"{targets / third}: no prediction" in err and len(err.strip().splitlines()) == 1
    assert cli("evaluate", "--target", targets, "--predictions", preds, "--only-predicted") == 0
    assert "skipped 1 target volumes" in capsys.readouterr().out
    assert (
        cli("evaluate", "--target", targets, "--predictions", preds, "--acquisition", "CORPDFS_FBK")
        == 0
    )
    capsys.readouterr()

    with h5py.File(preds / first, "r+") as hf:
        data = hf["reconstruction"][()]
        del hf["reconstruction"]
        hf.create_dataset("reconstruction", data=data[:1])
    assert (
        cli("evaluate", "--target", targets, "--predictions", preds, "--acquisition", "CORPDFS_FBK")
        == 2
    )
    err = capsys.readouterr().err
    assert (
        f"{preds / first}: prediction (1, {HR}, {HR}) and target (2, {HR}, {HR}) differ in shape"
        in err
    )
    assert (
        cli(
            "evaluate",
            "--target",
            targets,
            "--predictions",
            preds,
            "--only-predicted",
            "--prediction-key",
            "recon",
        )
        == 2
    )
    assert f"{preds / first}: prediction has no dataset 'recon'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "fault, message",
    [
        ("nan_prediction", "prediction 'reconstruction' holds NaN or inf"),
        ("inf_prediction", "prediction 'reconstruction' holds NaN or inf"),
        ("zero_target", "against {target}: metrics: the ground truth has no positive value"),
    ],
)
def test_evaluate_refuses_non_finite_predictions_and_targets_without_range(
    fault, message, eval_folders, tmp_path, capsys
):
    """A NaN, inf or -inf score is no result: the volume is named and nothing is written."""
    targets, preds = eval_folders
    name = sorted(p.name for p in targets.iterdir())[0]
    path, key = (
        (targets, "reconstruction_esc") if fault == "zero_target" else (preds, "reconstruction")
    )
    with h5py.File(path / name, "r+") as hf:
        data = hf[key][()]
        data[...] = 0.0 if fault == "zero_target" else data
        data[0, 0, 0] = {"nan_prediction": np.nan, "inf_prediction": np.inf}.get(fault, 0.0)
        hf[key][...] = data
    out = tmp_path / "scores.json"
    assert cli("evaluate", "--target", targets, "--predictions", preds, "--json", out) == 2
    err = capsys.readouterr().err.strip()
    assert (
        f"{preds / name}"
        + (" " if fault == "zero_target" else ": ")
        + message.format(target=targets / name)
        in err
        and len(err.splitlines()) == 1
    )
    assert not out.exists()


def test_evaluate_refuses_a_json_path_it_cannot_write_before_scoring(
    eval_folders, tmp_path, capsys
):
    targets, preds = eval_folders
    assert cli("evaluate", "--target", targets, "--predictions", preds, "--json", tmp_path) == 2
    captured = capsys.readouterr()
    assert (
        captured.err.strip() == f"cmfnet evaluate: error: --json {tmp_path}: "
        f"cannot write a file there ({tmp_path} is a folder)"
    )
    assert captured.out == ""  # refused before any volume was scored or printed


def test_volume_metrics_name_the_volume_that_cannot_be_scored():
    from cmfnet.mri.metrics import VolumeMetrics

    metrics = VolumeMetrics()
    metrics.add("good.h5", 0, np.ones((4, 4)), np.ones((4, 4)))
    metrics.add("empty.h5", 0, np.zeros((4, 4)), np.ones((4, 4)))
    with pytest.raises(
        ValueError, match=r"^empty\.h5: metrics: the ground truth has no positive value"
    ):
        metrics.compute()


# --------------------------------------------------------------------------------------------
# end to end: a trained checkpoint reproduces trainer.test
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_predictions_on_the_test_split_reproduce_trainer_test_metrics(tmp_path):
    env = {
        **os.environ,
        "CMFNET_CACHE_DIR": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
    }
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "run.py"),
            "experiment=smoke",
            "logger=csv",
            "hydra.run.dir=run",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    recorded = json.loads((run / "metrics.json").read_text())
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    assert cli("predict", best, "--split", "test", "--out", tmp_path / "pred", "--quiet") == 0

    config = load_checkpoint(best)["cmfnet_config"]
    split = config["data"]["splits"]["test"]
    dataset = FastMRIPairDataset(
        split["root"],
        split["pairs_csv"],
        config["scale"],
        JointRecSRTransform(RandomMaskFunc([0.08], [4]), seed_masks_by_name=True),
    )
    sr_scores, rec_scores = [], []
    for pair_idx, (_, target) in enumerate(dataset.pairs):
        indices = [i for i, (p, _) in enumerate(dataset.slices) if p == pair_idx]
        rec_target = np.stack([dataset.lowres_pair(i).rec_target for i in indices])
        with h5py.File(target.path, "r") as hf:
            sr_target = hf["reconstruction_esc"][: len(indices)]
        with h5py.File(tmp_path / "pred" / target.path.name, "r") as hf:
            sr, rec = hf["reconstruction"][()], hf["reconstruction_lr"][()]
        sr_scores.append([nmse(sr_target, sr), psnr(sr_target, sr), ssim(sr_target, sr)])
        rec_scores.append([nmse(rec_target, rec), psnr(rec_target, rec), ssim(rec_target, rec)])
    for prefix, scores in (("sr", sr_scores), ("rec", rec_scores)):
        for metric, value in zip(("nmse", "psnr", "ssim"), np.mean(scores, axis=0)):
            assert value == pytest.approx(recorded[f"{prefix}_{metric}"], rel=1e-4, abs=1e-6), (
                prefix,
                metric,
            )
    scores_json = tmp_path / "scores.json"  # the documented round trip: predict, then evaluate
    evaluate = ("evaluate", "--target", split["root"], "--predictions", tmp_path / "pred")
    assert cli(*evaluate, "--only-predicted", "--json", scores_json) == 0
    evaluated = json.loads(scores_json.read_text())["groups"]["all"]
    for metric in ("nmse", "psnr", "ssim"):
        assert evaluated[metric] == pytest.approx(recorded[f"sr_{metric}"], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    "name", ["unet_edsr_mc", "unet_swinir", "mtrans_edsr", "mtrans_edsr_mc", "mtrans_swinir_mc"]
)
def test_predict_and_evaluate_take_every_pipelines_checkpoint(name, data_root, tmp_path, capsys):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        overrides = [f"model={name}", "experiment=smoke", f"scale={SCALE}"]
        model_cfg = compose("train", overrides=overrides).model
    if name.startswith("mtrans"):  # built for this data's LR side, as ${lowres_side:} gives
        model_cfg.reconstruction.input_size = HR // SCALE
    config = {**run_config(), "model": OmegaConf.to_container(model_cfg, resolve=True)}
    from cmfnet.models import build_model

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / f"{name}.ckpt", build_model(config["model"]), config)
    out = tmp_path / "pred"
    assert cli("predict", ckpt, "--data", split_dir(data_root), "--out", out, "--quiet") == 0
    model, _ = build_model_from_checkpoint(ckpt)
    dataset = FastMRIPairDataset(
        split_dir(data_root),
        data_root / "singlecoil_test_split_less.csv",
        SCALE,
        JointRecSRTransform(RandomMaskFunc([0.08], [4], seed=42), seed_masks_by_name=True),
    )
    sample = dataset[0]
    with torch.no_grad():
        rec, sr = model(sample.target_input[None], sample.aux_input[None])
    with h5py.File(out / sample.fname, "r") as stored:
        assert stored.attrs["model"] == "cmfnet.models.ReconstructThenSuperResolve"
        np.testing.assert_allclose(
            stored["reconstruction"][sample.slice_idx],
            (sr * sample.std + sample.mean)[0, 0].numpy(),
            rtol=1e-5,
            atol=1e-9,
        )
        np.testing.assert_allclose(
            stored["reconstruction_lr"][sample.slice_idx],
            (rec * sample.std + sample.mean)[0, 0].numpy(),
            rtol=1e-5,
            atol=1e-9,
        )
    capsys.readouterr()
    scores = tmp_path / "scores.json"
    assert (
        cli(
            "evaluate",
            *("--target", split_dir(data_root), "--predictions", out, "--acquisition"),
            *("CORPDFS_FBK", "--json", scores),
        )
        == 0
    )
    scored = json.loads(scores.read_text())["groups"]["all"]
    assert scored["volumes"] == len(target_names(data_root)) and np.isfinite(scored["psnr"])


def add_slice(path: Path) -> None:
    """One more slice at the end of every per-slice dataset of a fastMRI-layout file (a target
    volume longer than its auxiliary, as in real PD/PD-FS pairs)."""
    with h5py.File(path, "r+") as hf:
        for key in ("kspace", "reconstruction_esc"):
            data = hf[key][()]
            del hf[key]
            hf.create_dataset(key, data=np.concatenate([data, data[-1:] * 1.5]))


def test_predict_then_evaluate_scores_the_slices_a_pair_covers(
    checkpoint, data_root, tmp_path, capsys
):
    folder = tmp_path / "singlecoil_test"
    shutil.copytree(split_dir(data_root), folder)
    shutil.copy(data_root / "singlecoil_test_split_less.csv", tmp_path)
    longer = target_names(data_root)[0]
    add_slice(folder / longer)  # 3 target slices, 2 auxiliary: the pair covers 2
    out = tmp_path / "pred"
    assert cli("predict", checkpoint, "--data", folder, "--out", out, "--quiet") == 0
    with h5py.File(out / longer, "r") as hf:
        prediction = hf["reconstruction"][()]
        assert hf.attrs["target_slices"].tolist() == [0, 1] and prediction.shape[0] == 2
    scores = tmp_path / "scores.json"
    capsys.readouterr()
    assert (
        cli(
            "evaluate",
            *("--target", folder, "--predictions", out, "--only-predicted", "--json", scores),
        )
        == 0
    ), capsys.readouterr().err
    with h5py.File(folder / longer, "r") as hf:
        target = hf["reconstruction_esc"][:2]
    scored = json.loads(scores.read_text())["per_volume"][longer]
    assert scored["psnr"] == pytest.approx(psnr(target, prediction), rel=1e-12)
    assert scored["ssim"] == pytest.approx(ssim(target, prediction), rel=1e-12)
    with h5py.File(out / longer, "r+") as hf:
        hf.attrs["target_slices"] = np.array([1, 3])
    assert cli("evaluate", "--target", folder, "--predictions", out, "--only-predicted") == 2
    assert "target_slices [1, 3] are not slices of" in capsys.readouterr().err


def test_a_checkpoint_naming_the_earlier_layouts_mask_predicts_as_today(
    checkpoint, data_root, predictions, tmp_path
):
    """Checkpoints written before the package was grouped name the mask as
    ``cmfnet.masks.RandomMaskFunc``: they load, and predict the same reconstructions."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    config = dict(state["cmfnet_config"])
    config["mask"] = {**config["mask"], "_target_": "cmfnet.masks.RandomMaskFunc"}
    earlier = tmp_path / "earlier.ckpt"
    torch.save({**state, "cmfnet_config": config}, earlier)
    out = tmp_path / "out"
    assert cli("predict", earlier, "--data", split_dir(data_root), "--out", out, "--quiet") == 0
    written = sorted(p.relative_to(predictions) for p in predictions.rglob("*.h5"))
    assert written and written == sorted(p.relative_to(out) for p in out.rglob("*.h5"))
    for name in written:
        with h5py.File(predictions / name) as today, h5py.File(out / name) as before:
            for key in ("reconstruction", "reconstruction_lr"):
                assert np.array_equal(today[key][()], before[key][()])
