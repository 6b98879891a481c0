"""Tests of the synthetic fastMRI-layout generator (cmfnet.data.synth) and ``cmfnet synth``."""

from __future__ import annotations

import csv
import json
import math
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cmfnet.cli import main
from cmfnet.data import synth, synth_anatomy
from cmfnet.data.synth import generate_dataset, generate_pair
from cmfnet.data.synth_anatomy import column_limits
from cmfnet.data.synth_files import ISMRMRD_NAMESPACE, write_fastmri_volume
from cmfnet.mri.kspace import center_crop, ifft2c

H, W, S = 32, 36, 4
SPLITS = ("train", "val", "test")
COUNTS = {"train": 2, "val": 1, "test": 1}


def _volumes(root: Path):
    return sorted(root.glob("singlecoil_*/*.h5"))


def _pairs(root: Path, split: str) -> list[list[str]]:
    with open(root / f"singlecoil_{split}_split_less.csv", newline="") as f:
        return [row for row in csv.reader(f)]


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory) -> Path:
    return generate_dataset(
        tmp_path_factory.mktemp("phantom"),
        n_train=2,
        n_val=1,
        n_test=1,
        slices=S,
        hr_size=H,
        width=W,
        seed=0,
        source="phantom",
        progress=False,
    )


@pytest.fixture(scope="module")
def mni_dir(tmp_path_factory) -> Path:
    return generate_dataset(
        tmp_path_factory.mktemp("mni"),
        n_train=2,
        n_val=1,
        n_test=1,
        slices=S,
        hr_size=H,
        width=W,
        seed=0,
        source="mni",
        progress=False,
    )


@pytest.fixture(params=["phantom", "mni"])
def data_dir(request, phantom_dir, mni_dir) -> Path:
    return phantom_dir if request.param == "phantom" else mni_dir


# ------------------------------------------------------------------------------ layout


def test_layout_datasets_dtypes_shapes_attrs(data_dir):
    files = _volumes(data_dir)
    assert len(files) == 2 * sum(COUNTS.values())
    for path in files:
        assert path.parent.name.startswith("singlecoil_")
        with h5py.File(path, "r") as hf:
            assert set(hf.keys()) == {"ismrmrd_header", "kspace", "reconstruction_esc"}
            assert hf["kspace"].dtype == np.complex64
            assert hf["kspace"].shape == (S, 2 * H, W)
            assert hf["reconstruction_esc"].dtype == np.float32
            assert hf["reconstruction_esc"].shape == (S, H, H)
            assert hf["ismrmrd_header"].shape == ()
            assert isinstance(hf["ismrmrd_header"][()], bytes)
            recon = hf["reconstruction_esc"][()]
            attrs = dict(hf.attrs)
        role = "aux" if path.name.endswith("_pd.h5") else "target"
        assert path.name.endswith(("_pd.h5", "_pdfs.h5"))
        assert attrs["acquisition"] == {"aux": "CORPD_FBK", "target": "CORPDFS_FBK"}[role]
        assert attrs["synthetic_contrast"] == {"aux": "PD", "target": "T2"}[role]
        assert attrs["patient_id"] == path.name.rsplit("_", 1)[0]
        assert attrs["split"] == path.parent.name.split("_")[1]
        assert attrs["max"] == pytest.approx(float(recon.max()), rel=1e-6)
        assert attrs["norm"] == pytest.approx(
            float(np.linalg.norm(recon.astype(np.float64))), rel=1e-6
        )
        # fastMRI-like magnitudes (knee recon values ~1e-5..1e-4)
        assert 1e-5 < attrs["max"] < 1e-3
        assert len(attrs["template_slices"]) == S


def test_header_fields_parse_with_elementtree_and_fastmri(data_dir, tmp_path):
    mri_data = pytest.importorskip("fastmri.data.mri_data")
    maximum, center, pad_l, pad_r = column_limits(W)
    for path in _volumes(data_dir):
        with h5py.File(path, "r") as hf:
            root = ET.fromstring(hf["ismrmrd_header"][()])
        assert root.tag == f"{{{ISMRMRD_NAMESPACE}}}ismrmrdHeader"
        q = lambda *names: mri_data.et_query(root, list(names))  # noqa: E731
        assert [int(q("encoding", "encodedSpace", "matrixSize", a)) for a in "xyz"] == [2 * H, W, 1]
        assert [int(q("encoding", "reconSpace", "matrixSize", a)) for a in "xyz"] == [H, H, 1]
        fov_enc = [float(q("encoding", "encodedSpace", "fieldOfView_mm", a)) for a in "xyz"]
        fov_rec = [float(q("encoding", "reconSpace", "fieldOfView_mm", a)) for a in "xyz"]
        assert fov_enc[0] == pytest.approx(2 * fov_rec[0])
        assert fov_enc[1] == pytest.approx(fov_rec[1] * W / H)
        assert int(q("encoding", "encodingLimits", "kspace_encoding_step_1", "maximum")) == maximum
        assert int(q("encoding", "encodingLimits", "kspace_encoding_step_1", "center")) == center
        assert int(q("encoding", "encodingLimits", "kspace_encoding_step_1", "minimum")) == 0
        assert float(q("acquisitionSystemInformation", "systemFieldStrength_T")) == 3.0
        te = float(q("sequenceParameters", "TE"))
        assert te == (12.0 if path.name.endswith("_pd.h5") else 100.0)
        assert float(q("sequenceParameters", "TR")) == 4000.0

    # fastMRI's own SliceDataset reads the folder and derives the same padding
    ds = mri_data.SliceDataset(
        data_dir / "singlecoil_train",
        challenge="singlecoil",
        dataset_cache_file=tmp_path / "cache.pkl",
    )
    assert len(ds) == 2 * COUNTS["train"] * S
    meta = ds._retrieve_metadata(_volumes(data_dir)[0])[0]
    assert (meta["padding_left"], meta["padding_right"]) == (pad_l, pad_r)
    assert meta["encoding_size"] == (2 * H, W, 1) and meta["recon_size"] == (H, H, 1)
    kspace, mask, target, attrs, fname, dataslice = ds[0]
    assert kspace.shape == (2 * H, W) and target.shape == (H, H)
    assert attrs["acquisition"] in ("CORPD_FBK", "CORPDFS_FBK")


def test_unacquired_columns_zero_acquired_nonzero(data_dir):
    maximum, center, pad_l, pad_r = column_limits(W)
    assert 0 < pad_l and pad_r < W and maximum < W - 1
    assert pad_l == W // 2 - center and pad_r == pad_l + maximum + 1
    for path in _volumes(data_dir):
        with h5py.File(path, "r") as hf:
            k = hf["kspace"][()]
        assert np.all(k[..., :pad_l] == 0) and np.all(k[..., pad_r:] == 0)
        assert np.all(np.abs(k[..., pad_l:pad_r]).max(axis=(0, 1)) > 0)
        # k-space centre (DC) sits at (H, W // 2) as with fft2c (the smooth phase moves the
        # peak by less than a sample)
        energy = np.abs(k).sum(axis=0)
        row, col = np.unravel_index(np.argmax(energy), energy.shape)
        assert abs(row - H) <= 1 and abs(col - W // 2) <= 1


def test_reconstruction_matches_kspace(data_dir):
    fastmri = pytest.importorskip("fastmri")
    for path in _volumes(data_dir):
        with h5py.File(path, "r") as hf:
            k = hf["kspace"][()]
            recon = hf["reconstruction_esc"][()]
        ours = np.abs(center_crop(ifft2c(k.astype(np.complex128)), (H, H)))
        np.testing.assert_allclose(recon, ours, rtol=0, atol=1e-6 * recon.max())
        # fastMRI's own torch path (complex64 as float32 pairs)
        kt = torch.view_as_real(torch.from_numpy(k))
        theirs = fastmri.complex_abs(fastmri.ifft2c(kt))
        top, left = (2 * H - H) // 2, (W - H) // 2
        theirs = theirs[:, top : top + H, left : left + H].numpy()
        np.testing.assert_allclose(recon, theirs, rtol=0, atol=1e-5 * recon.max())


# ------------------------------------------------------------------------------ pairing / CSV


def test_csvs_list_existing_pairs(data_dir):
    for split in SPLITS:
        text = (data_dir / f"singlecoil_{split}_split_less.csv").read_text()
        assert not text.startswith("pd_file")  # no header row, as MINet's files
        rows = _pairs(data_dir, split)
        assert len(rows) == COUNTS[split]
        for pd_file, pdfs_file, score in rows:
            assert (data_dir / f"singlecoil_{split}" / pd_file).is_file()
            assert (data_dir / f"singlecoil_{split}" / pdfs_file).is_file()
            assert pd_file.endswith("_pd.h5") and pdfs_file.endswith("_pdfs.h5")
            assert pd_file[: -len("_pd.h5")] == pdfs_file[: -len("_pdfs.h5")]
            assert -1.0 <= float(score) <= 1.0
            with (
                h5py.File(data_dir / f"singlecoil_{split}" / pd_file, "r") as a,
                h5py.File(data_dir / f"singlecoil_{split}" / pdfs_file, "r") as b,
            ):
                x = a["reconstruction_esc"][()].ravel().astype(np.float64)
                y = b["reconstruction_esc"][()].ravel().astype(np.float64)
            assert float(score) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-4)
    assert not list(data_dir.glob("*.h5")), "no .h5 next to the CSVs"
    meta = json.loads((data_dir / "synth.json").read_text())
    assert meta["seed"] == 0 and meta["hr_size"] == H and meta["width"] == W
    assert meta["counts"] == COUNTS
    assert not list(data_dir.rglob("*.tmp"))


def test_pairs_are_coregistered_and_contrasts_differ():
    def support(k):
        r = np.abs(center_crop(ifft2c(k.astype(np.complex128)), (H, H)))
        return r > 0.1 * r.max()

    def dice(a, b):
        return 2.0 * (a & b).sum() / (a.sum() + b.sum())

    p0 = generate_pair("mni", "train", 0, slices=S, hr_size=H, width=W, seed=0, noise=0.0)
    p1 = generate_pair("mni", "train", 1, slices=S, hr_size=H, width=W, seed=0, noise=0.0)
    aux, tgt = p0["kspace"]["aux"], p0["kspace"]["target"]
    assert aux.shape == tgt.shape == (S, 2 * H, W)
    same = dice(support(aux), support(tgt))
    other = dice(support(aux), support(p1["kspace"]["target"]))
    assert same > 0.98 and same > other + 0.02
    a = np.abs(ifft2c(aux.astype(np.complex128))).ravel()
    b = np.abs(ifft2c(tgt.astype(np.complex128))).ravel()
    assert np.corrcoef(a, b)[0, 1] < 0.99
    assert np.linalg.norm(a / np.linalg.norm(a) - b / np.linalg.norm(b)) > 0.1


@pytest.mark.parametrize("source", ["phantom", "mni"])
def test_contrast_physics(source):
    """PD-weighted: GM brighter than WM; T2-weighted: CSF > GM > WM (noise-free)."""
    pair = generate_pair(source, "train", 0, slices=S, hr_size=64, width=72, seed=3, noise=0.0)
    tissues = pair["anatomy"].tissues
    frac = {t: pair["fractions"][i] for i, t in enumerate(tissues)}
    mags = {
        role: np.abs(center_crop(ifft2c(k.astype(np.complex128)), (64, 64)))
        for role, k in pair["kspace"].items()
    }

    def mean(role, tissue):
        sel = frac[tissue] > 0.9
        assert sel.sum() > 3, tissue
        return float(mags[role][sel].mean())

    assert mean("target", "csf") > mean("target", "gm") > mean("target", "wm")
    assert mean("aux", "gm") > mean("aux", "wm")
    assert mean("aux", "wm") / mean("target", "wm") > 2.0


# ------------------------------------------------------------------------------ anatomy splits


def test_split_anatomy_disjoint(data_dir):
    meta = json.loads((data_dir / "synth.json").read_text())
    used: dict[str, set[int]] = {s: set() for s in SPLITS}
    for path in _volumes(data_dir):
        with h5py.File(path, "r") as hf:
            split = hf.attrs["split"]
            z = [int(v) for v in hf.attrs["template_slices"]]
        assert z == list(range(z[0], z[0] + S)), "consecutive slices"
        lo, hi = meta["slabs"][split]
        assert lo <= z[0] and z[-1] < hi
        used[split].update(z)
    assert not used["train"] & used["val"]
    assert not used["train"] & used["test"]
    assert not used["val"] & used["test"]
    slabs = meta["slabs"]
    assert slabs["val"][1] <= slabs["train"][0] and slabs["train"][1] <= slabs["test"][0]


# ------------------------------------------------------------------------------ determinism


def test_same_seed_identical_other_seed_differs(tmp_path, phantom_dir):
    again = generate_dataset(
        tmp_path / "again",
        n_train=2,
        n_val=1,
        n_test=1,
        slices=S,
        hr_size=H,
        width=W,
        seed=0,
        source="phantom",
        progress=False,
    )
    other = generate_dataset(
        tmp_path / "other",
        n_train=2,
        n_val=1,
        n_test=1,
        slices=S,
        hr_size=H,
        width=W,
        seed=1,
        source="phantom",
        progress=False,
    )
    for path in _volumes(phantom_dir):
        rel = path.relative_to(phantom_dir)
        with (
            h5py.File(path, "r") as a,
            h5py.File(again / rel, "r") as b,
            h5py.File(other / rel, "r") as c,
        ):
            for key in ("kspace", "reconstruction_esc"):
                assert a[key][()].tobytes() == b[key][()].tobytes()
                assert not np.array_equal(a[key][()], c[key][()])
        assert path.read_bytes() == (again / rel).read_bytes()
    assert (phantom_dir / "singlecoil_train_split_less.csv").read_text() == (
        again / "singlecoil_train_split_less.csv"
    ).read_text()


def test_subject_independent_of_other_counts(tmp_path):
    small = generate_dataset(tmp_path / "a", n_train=0, n_val=1, n_test=0, progress=False)
    large = generate_dataset(tmp_path / "b", n_train=3, n_val=2, n_test=1, progress=False)
    name = "singlecoil_val/synth_val_0000_pdfs.h5"
    with h5py.File(small / name, "r") as a, h5py.File(large / name, "r") as b:
        assert np.array_equal(a["kspace"][()], b["kspace"][()])
    assert not list((small / "singlecoil_train").glob("*.h5"))
    assert _pairs(small, "train") == [] and len(_pairs(large, "train")) == 3


# ------------------------------------------------------------------------------ noise


def test_noise_level_in_background(tmp_path):
    h, w = 64, 72
    clean = generate_pair("phantom", "train", 0, slices=2, hr_size=h, width=w, seed=0, noise=0.0)
    noisy = generate_pair("phantom", "train", 0, slices=2, hr_size=h, width=w, seed=0, noise=0.05)
    assert clean["noise_sigma"] == 0.0 and noisy["noise_sigma"] > 0
    diff = (noisy["kspace"]["aux"] - clean["kspace"]["aux"]).astype(np.complex128)
    _, _, pad_l, pad_r = column_limits(w)
    acquired = diff[..., pad_l:pad_r]
    assert np.std(acquired.real) == pytest.approx(noisy["noise_sigma"], rel=0.05)
    assert np.std(acquired.imag) == pytest.approx(noisy["noise_sigma"], rel=0.05)
    # sigma is relative to the PD brain signal: ~noise * mean brain magnitude
    pd = np.abs(ifft2c(clean["kspace"]["aux"].astype(np.complex128)))
    brain = pd > 0.3 * pd.max()
    assert noisy["noise_sigma"] / pd[brain].mean() == pytest.approx(0.05, rel=0.3)


# ------------------------------------------------------------------------------ CLI / errors


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(
        [
            "synth",
            "--out",
            str(out),
            "--train",
            "1",
            "--val",
            "1",
            "--test",
            "0",
            "--slices",
            "3",
            "--hr-size",
            "16",
            "--width",
            "20",
            "--seed",
            "5",
            "--source",
            "phantom",
            "--noise",
            "0.01",
            "--quiet",
        ]
    )
    assert rc == 0
    assert len(list((out / "singlecoil_train").glob("*.h5"))) == 2
    assert len(list((out / "singlecoil_val").glob("*.h5"))) == 2
    assert _pairs(out, "test") == []
    with h5py.File(out / "singlecoil_train" / "synth_train_0000_pd.h5", "r") as hf:
        assert hf["kspace"].shape == (3, 32, 20)
        assert int(hf.attrs["seed"]) == 5
    meta = json.loads((out / "synth.json").read_text())
    assert meta["noise"] == 0.01 and meta["source"] == "phantom"

    rc = main(["synth", "--out", str(out), "--hr-size", "4", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "hr_size" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        ({"hr_size": 4}, "hr_size"),
        ({"width": 30}, "width"),  # W < H
        ({"width": 200}, "width"),  # W > 4H
        ({"slices": 0}, "slices"),
        ({"slices": 1000}, "slices"),  # more than a slab holds
        ({"n_train": -1}, "n_train"),
        ({"n_val": -2}, "n_val"),
        ({"n_test": 1.5}, "n_test"),
        ({"noise": -0.1}, "noise"),
        ({"noise": float("nan")}, "noise"),
        ({"seed": -1}, "seed"),
        ({"source": "brainweb"}, "source"),
    ],
)
def test_bad_settings_raise(tmp_path, kwargs, setting):
    with pytest.raises(ValueError, match=setting):
        generate_dataset(tmp_path / "x", progress=False, **kwargs)
    assert not (tmp_path / "x").exists(), "validated before anything is written"


def test_unwritable_out_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="out_dir"):
        generate_dataset(blocker / "sub", progress=False)
    with pytest.raises(ValueError, match="out_dir"):
        generate_dataset(blocker, progress=False)


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    k = np.zeros((1, 2 * H, W), np.complex64)
    header = synth.build_ismrmrd_header(
        hr_size=H,
        width=W,
        slices=1,
        fov_mm=220.0,
        thickness_mm=1.0,
        maximum=W - 3,
        center=(W - 2) // 2,
        tr_ms=4000.0,
        te_ms=12.0,
        protocol="CORPD_FBK",
    )
    target = tmp_path / "vol.h5"

    def boom(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(synth.np.linalg, "norm", boom)
    with pytest.raises(RuntimeError):
        write_fastmri_volume(target, k, header, (H, H), {"acquisition": "CORPD_FBK"})
    assert not target.exists() and not list(tmp_path.iterdir())
    monkeypatch.undo()
    write_fastmri_volume(target, k, header, (H, H), {"acquisition": "CORPD_FBK"})
    assert target.exists() and [p.name for p in tmp_path.iterdir()] == ["vol.h5"]


def test_mni_source_makes_no_network_access(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    synth_anatomy._mni_anatomy.cache_clear()
    out = generate_dataset(
        tmp_path / "mni",
        n_train=1,
        n_val=0,
        n_test=0,
        slices=2,
        hr_size=16,
        width=16,
        source="mni",
        progress=False,
    )
    assert len(_volumes(out)) == 2


def test_generate_dataset_defaults_are_tiny(tmp_path):
    out = generate_dataset(tmp_path / "tiny")
    assert out == tmp_path / "tiny"
    with h5py.File(out / "singlecoil_train" / "synth_train_0001_pdfs.h5", "r") as hf:
        assert hf["kspace"].shape == (4, 64, 36)
        assert hf.attrs["synthetic_source"] == "phantom"
    assert math.isclose(json.loads((out / "synth.json").read_text())["noise"], 0.02)


def test_cli_preview_draws_a_png_of_each_split(tmp_path):
    from cmfnet.cli import main

    out = tmp_path / "data"
    assert (
        main(
            [
                "synth",
                "--out",
                str(out),
                "--train",
                "1",
                "--val",
                "1",
                "--test",
                "1",
                "--slices",
                "2",
                "--hr-size",
                "16",
                "--width",
                "20",
                "--source",
                "phantom",
                "--quiet",
                "--preview",
            ]
        )
        == 0
    )
    preview = out / "preview.png"
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and preview.stat().st_size > 5000
