"""Shared fixtures: tiny fastMRI-layout files written directly with h5py (not by our generator),
tiny NIfTI volumes, and the repository paths."""

from __future__ import annotations

import signal
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"


def pytest_configure(config) -> None:
    """Ctrl-C as a terminal gives it: a shell without job control starts a background command
    (``make test &``) with SIGINT ignored, which every ``run.py`` a test starts would inherit, and
    the tests of what SIGINT does would fail."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list) -> None:
    """The longest tests first (those marked slurm, which wait on SLURM jobs, then those marked
    slow), so that under xdist the short ones fill the end and no long test starts last."""

    def rank(item) -> int:
        return (
            0 if item.get_closest_marker("slurm") else 1 if item.get_closest_marker("slow") else 2
        )

    items.sort(key=rank)


HEADER_TEMPLATE = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  <encoding>
    <encodedSpace><matrixSize><x>{enc_x}</x><y>{enc_y}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>280</x><y>140</y><z>4.5</z></fieldOfView_mm></encodedSpace>
    <reconSpace><matrixSize><x>{rec}</x><y>{rec}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>140</x><y>140</y><z>3</z></fieldOfView_mm></reconSpace>
    <encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>{maximum}</maximum>
      <center>{center}</center></kspace_encoding_step_1></encodingLimits>
  </encoding>
</ismrmrdHeader>"""


def write_fastmri_file(
    path: Path, image: np.ndarray, cols: int, acquisition: str = "CORPD_FBK"
) -> None:
    """Write complex HR images (slices, H, H) in fastMRI single-coil layout: readout
    oversampled 2x, ``cols`` phase-encode columns, reconstruction_esc from the stored k-space."""
    from cmfnet.mri.kspace import center_crop, fft2c, ifft2c

    slices, rec, _ = image.shape
    field = np.zeros((slices, 2 * rec, cols), dtype=np.complex64)
    top, left = rec // 2, (cols - rec) // 2
    field[:, top : top + rec, left : left + rec] = image
    kspace = fft2c(field).astype(np.complex64)
    esc = np.abs(center_crop(ifft2c(kspace), (rec, rec))).astype(np.float32)
    header = HEADER_TEMPLATE.format(
        enc_x=2 * rec, enc_y=cols, rec=rec, maximum=cols - 1, center=cols // 2
    )
    with h5py.File(path, "w") as hf:
        hf.create_dataset("kspace", data=kspace)
        hf.create_dataset("reconstruction_esc", data=esc)
        hf.create_dataset("ismrmrd_header", data=header.encode())
        hf.attrs["acquisition"] = acquisition
        hf.attrs["max"] = float(esc.max())


def smooth_images(rng: np.random.Generator, slices: int, size: int) -> np.ndarray:
    """Complex smooth blobs: (slices, size, size) complex64."""
    y, x = np.mgrid[:size, :size] / size - 0.5
    images = []
    for _ in range(slices):
        cy, cx, r = rng.uniform(-0.15, 0.15), rng.uniform(-0.15, 0.15), rng.uniform(0.2, 0.35)
        blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r**2)) * (np.hypot(y, x) < 0.45)
        images.append(blob * np.exp(1j * rng.uniform(-0.5, 0.5) * x))
    return np.stack(images).astype(np.complex64)


@pytest.fixture
def fastmri_pairs(tmp_path: Path) -> Path:
    """A folder with two PD/PD-FS pairs (16x16 HR, 20 columns) and a pairing CSV beside it."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "singlecoil_val"
    folder.mkdir()
    rows = []
    for i, n_slices in enumerate((3, 4)):
        pd_name, pdfs_name = f"file{i}_pd.h5", f"file{i}_pdfs.h5"
        write_fastmri_file(folder / pd_name, smooth_images(rng, n_slices, 16), cols=20)
        write_fastmri_file(
            folder / pdfs_name,
            smooth_images(rng, n_slices + i, 16),
            cols=20,
            acquisition="CORPDFS_FBK",
        )
        rows.append(f"{pd_name},{pdfs_name},0.9")
    (folder / "notes.txt").write_text("not an HDF5 file; must be ignored")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


@pytest.fixture
def isles_root(tmp_path: Path) -> Path:
    """Two ISLES-style subjects with 24x24x10 T1/T2 NIfTI volumes."""
    import nibabel as nib

    rng = np.random.default_rng(1)
    root = tmp_path / "isles"
    for subject in ("1", "2"):
        for modality in ("MR_T1", "MR_T2", "MR_Flair"):
            folder = root / subject / f"VSD.Brain.XX.O.{modality}.{subject}00"
            folder.mkdir(parents=True)
            volume = rng.random((24, 24, 10)).astype(np.float32)
            nib.save(
                nib.Nifti1Image(volume, np.eye(4)),
                folder / f"VSD.Brain.XX.O.{modality}.{subject}00.nii",
            )
    return root


def descendant_pids(pid: int) -> set[int]:
    """Live (non-zombie) descendant pids of ``pid``, from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (exists and is not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _touch_marker(path: str) -> None:
    Path(path).touch()


class CodeOnUnpickle:
    """Unpickling this object would run `_touch_marker` (arbitrary code): checkpoints holding
    it test that cmfnet never unpickles code from a file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch_marker, (self.marker,))


def assert_scored_as_one_process(run: Path, cwd: Path) -> None:
    """The test metrics a DDP run recorded in ``run`` (gathered over its ranks) equal a
    single-process ``cmfnet predict`` + ``cmfnet evaluate`` of its best checkpoint, volume by
    volume and on average. ``cwd``: the folder the run's relative data paths start from."""
    import json

    from omegaconf import OmegaConf

    from cmfnet.cli import main as cli
    from cmfnet.mri.metrics import VOLUME_SCORES_FILE, read_volume_scores

    recorded = json.loads((run / "metrics.json").read_text())
    assert recorded["status"] == "completed"
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    test_root = Path(OmegaConf.load(run / "config.yaml").data.splits.test.root)
    if not test_root.is_absolute():
        test_root = cwd / test_root
    out = cwd / f"{run.name}-alone"
    assert cli(["predict", str(best), "--split", "test", "--out", str(out), "--quiet"]) == 0
    scores_file = cwd / f"{run.name}-alone.json"
    evaluate = ["evaluate", "--target", str(test_root), "--predictions", str(out)]
    assert cli([*evaluate, "--only-predicted", "--json", str(scores_file)]) == 0
    single = json.loads(scores_file.read_text())["per_volume"]
    assert len(single) == 1  # one test volume of 3 slices: 2 ranks see 2 slices each
    ((volume, scores),) = single.items()
    kept = read_volume_scores(run / VOLUME_SCORES_FILE)[("fastmri", "sr")]  # both ranks' slices
    assert list(kept) == [volume]
    for metric in ("psnr", "ssim", "nmse"):
        assert scores[metric] == pytest.approx(recorded[f"sr_{metric}"], rel=1e-5), metric
        assert kept[volume][metric] == pytest.approx(scores[metric], rel=1e-5), metric
