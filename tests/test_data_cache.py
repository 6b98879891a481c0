"""The per-slice LR cache is filled once at set-up and serves every epoch's DataLoader workers;
errors raised inside workers keep their one-line message."""

import functools
import shutil

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cmfnet.data.errors import DataError
from cmfnet.data.fastmri import FastMRIPairDataset
from cmfnet.errors import one_line
from cmfnet.lit.datamodule import JointDataModule
from cmfnet.masks import RandomMaskFunc


def _datamodule(root, workers, fill_cache=True):
    """Training on the fixture's pairs, validation on a copy of them (splits may not share
    files)."""
    shutil.copytree(root / "singlecoil_val", root / "val_copy", dirs_exist_ok=True)
    train = functools.partial(
        FastMRIPairDataset, root=root / "singlecoil_val", pairs_csv=root / "pairs.csv"
    )
    val = functools.partial(
        FastMRIPairDataset, root=root / "val_copy", pairs_csv=root / "pairs.csv"
    )
    return JointDataModule(
        root=str(root),
        splits={"train": train, "val": val},
        mask_func=RandomMaskFunc([0.08], [4]),
        scale=2,
        seed=0,
        batch_size=2,
        num_workers=workers,
        fill_cache=fill_cache,
    )


def test_a_file_in_both_the_training_and_a_scored_split_is_refused(fastmri_pairs):
    split = functools.partial(
        FastMRIPairDataset,
        root=fastmri_pairs / "singlecoil_val",
        pairs_csv=fastmri_pairs / "pairs.csv",
    )
    datamodule = JointDataModule(
        root=str(fastmri_pairs),
        splits={"train": split, "val": split, "test": split},
        mask_func=RandomMaskFunc([0.08], [4]),
        scale=2,
        fill_cache=False,
    )
    with pytest.raises(
        DataError,
        match=r"data\.splits: .*file0_pdfs\.h5 is a target of both the val and the train "
        r"split \(2 shared file\(s\)\); training files must not be scored",
    ):
        datamodule.setup("fit")
    scored_only = JointDataModule(
        root=str(fastmri_pairs),
        splits={"val": split, "test": split},
        mask_func=RandomMaskFunc([0.08], [4]),
        scale=2,
        fill_cache=False,
    )
    scored_only.setup()  # validation and test may share files (fastMRI knee: test = val)
    assert set(scored_only.datasets) == {"val", "test"}


def _epochs(datamodule, epochs=2):
    """Slices delivered per epoch by the training loader, then by the validation loader."""
    loader = datamodule.train_dataloader()
    seen = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        seen.append(sum(batch.target_input.shape[0] for batch in loader))
    seen.append(sum(batch.target_input.shape[0] for batch in datamodule.val_dataloader()))
    return seen


def _break_nan_slice(root):
    with h5py.File(root / "singlecoil_val" / "file0_pdfs.h5", "a") as hf:
        kspace = hf["kspace"][()]
        kspace[1, 3, 4] = np.nan
        hf["kspace"][...] = kspace


def test_setup_fills_the_cache_with_the_degradation_of_every_slice(fastmri_pairs):
    datamodule = _datamodule(fastmri_pairs, workers=2)
    torch_state = torch.get_rng_state()
    datamodule.setup("fit")
    assert torch.equal(torch.get_rng_state(), torch_state), (
        "filling the cache must not move the global RNG"
    )
    for split in ("train", "val"):
        dataset = datamodule.datasets[split]
        assert sorted(dataset._cache) == list(range(len(dataset))) == list(range(7))
        for index, (pair_idx, slice_idx) in enumerate(dataset.slices):
            fresh = dataset.build_lowres(pair_idx, slice_idx)
            for field in ("target_kspace_lr", "rec_target", "aux_lr", "target_hr"):
                np.testing.assert_array_equal(
                    getattr(dataset._cache[index], field), getattr(fresh, field)
                )


@pytest.mark.parametrize("workers", [0, 2])
def test_every_epoch_is_served_from_the_cache_without_reading_files(fastmri_pairs, workers):
    filled = _datamodule(fastmri_pairs, workers=workers)
    unfilled = _datamodule(fastmri_pairs, workers=workers, fill_cache=False)
    filled.setup("fit")
    unfilled.setup("fit")
    shutil.rmtree(fastmri_pairs / "singlecoil_val")  # any read of a slice from now on fails
    assert _epochs(filled) == [
        6,
        6,
        7,
    ]  # 7 slices, batches of 2, the trailing one dropped in training
    with pytest.raises(DataError, match="file not found"):
        _epochs(unfilled)


def test_a_bad_slice_found_by_a_fill_worker_is_a_one_line_error_naming_the_file(fastmri_pairs):
    _break_nan_slice(fastmri_pairs)
    with pytest.raises(DataError) as raised:
        _datamodule(fastmri_pairs, workers=2).setup("fit")
    message = str(raised.value)
    assert "\n" not in message
    assert message.endswith("file0_pdfs.h5: slice 1 k-space contains NaN or inf"), message


def test_errors_re_raised_from_dataloader_workers_read_as_the_original(fastmri_pairs):
    dataset = _datamodule(fastmri_pairs, workers=0, fill_cache=False)
    _break_nan_slice(fastmri_pairs)  # in training only: set-up reads every validation slice
    dataset.setup("fit")
    train = dataset.datasets["train"]
    with pytest.raises(DataError) as in_process:
        train[1]
    with pytest.raises(DataError) as from_worker:
        list(DataLoader(torch.utils.data.Subset(train, [1]), num_workers=1, collate_fn=list))
    assert str(from_worker.value).startswith("Caught DataError in DataLoader worker process 0")
    assert one_line(from_worker.value) == str(in_process.value)
