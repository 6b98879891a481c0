"""The per-slice LR cache is filled once at set-up and serves every epoch's DataLoader workers;
errors raised inside workers keep their one-line message. The shared cache (files every process
of a node maps) gives the same batches bit for bit, holds one copy for two ranks, and is never
reused half-filled."""

import functools
import multiprocessing
import os
import pickle
import shutil
import signal
import threading
import time

import h5py
import numpy as np
import pytest
import torch
from conftest import smooth_images, write_fastmri_file
from ddp_rank import large_split, rank_items, run_rank
from torch.utils.data import DataLoader

from cmfnet.data.fastmri import FastMRIPairDataset
from cmfnet.data.slice_cache import SliceCache, claim_slices_folder
from cmfnet.lit.datamodule import JointDataModule, collate_samples
from cmfnet.mri.masks import RandomMaskFunc
from cmfnet.runs.errors import DataError, one_line
from cmfnet.runs.ownership import MARKER, ForeignPathError, mark, owner_kind


def _datamodule(root, workers, fill_cache=True, shared=False):
    """Training on the fixture's pairs, validation on a copy of them (splits may not share
    files); with ``shared``, the cache in files under ``root/cache``."""
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
        shared_cache=shared,
        cache_dir=str(root / "cache") if shared else None,
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


@pytest.mark.parametrize("workers,shared", [(0, False), (2, False), (2, True)])
def test_every_epoch_is_served_from_the_cache_without_reading_files(fastmri_pairs, workers, shared):
    filled = _datamodule(fastmri_pairs, workers=workers, shared=shared)
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


@pytest.mark.slow
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


def _batches(datamodule, epochs=2):
    """Every training batch of ``epochs`` epochs, then every validation batch."""
    loader = datamodule.train_dataloader()
    batches = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        batches += list(loader)
    return batches + list(datamodule.val_dataloader())


def _assert_equal_batches(these, those):
    assert len(these) == len(those)
    for this, that in zip(these, those):
        assert this._fields == that._fields
        for name, value in zip(this._fields, this):
            other = getattr(that, name)
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, other), name  # bitwise: same values, same dtype
            else:
                assert value == other, name


@pytest.mark.parametrize("workers", [0, 2])
def test_the_shared_cache_gives_bitwise_the_batches_of_the_in_memory_cache(fastmri_pairs, workers):
    in_memory = _datamodule(fastmri_pairs, workers=workers)
    in_memory.setup("fit")
    expected = _batches(in_memory)
    shared = _datamodule(fastmri_pairs, workers=workers, shared=True)
    shared.prepare_data()
    shared.setup("fit")
    assert isinstance(shared.datasets["train"]._cache, SliceCache)
    assert len(shared.datasets["train"]._cache) == 7
    _assert_equal_batches(_batches(shared), expected)
    again = _datamodule(fastmri_pairs, workers=workers, shared=True)
    assert again.datasets == {}
    train = again.build_dataset("train")
    assert train.fill_shared_cache(fastmri_pairs / "cache") == 0  # mapped, not filled again
    carried = pickle.loads(pickle.dumps(train._cache))  # as a spawned worker receives it
    assert len(pickle.dumps(train._cache)) < 1000
    for index in range(len(train)):
        for field in ("target_kspace_lr", "rec_target", "aux_lr", "target_hr"):
            stored = getattr(carried[index], field)
            assert not stored.flags.writeable
            np.testing.assert_array_equal(
                stored, getattr(in_memory.datasets["train"]._cache[index], field)
            )


def _kill_mid_fill(root, cache_dir, ready):
    """In a child process: fill the shared cache, and stop for good (to be killed) on slice 3."""
    dataset = _datamodule(root, workers=0).build_dataset("train")
    build = dataset.build_lowres

    def stall(pair_idx, slice_idx):
        if (pair_idx, slice_idx) == dataset.slices[3]:
            ready.set()
            time.sleep(600)
        return build(pair_idx, slice_idx)

    dataset.build_lowres = stall
    dataset.fill_shared_cache(cache_dir)


def test_a_fill_killed_or_failed_part_way_is_never_reused(fastmri_pairs):
    cache_dir = fastmri_pairs / "cache"
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    child = context.Process(target=_kill_mid_fill, args=(fastmri_pairs, cache_dir, ready))
    child.start()
    assert ready.wait(60)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    slices = cache_dir / "slices"
    assert [p.name for p in slices.glob(".*.partial-*")], "the killed fill left its partial folder"
    dataset = _datamodule(fastmri_pairs, workers=0).build_dataset("train")
    assert dataset.fill_shared_cache(cache_dir) == 7  # filled again, from the files
    assert not list(slices.glob(".*.partial-*"))
    for index, (pair_idx, slice_idx) in enumerate(dataset.slices):
        np.testing.assert_array_equal(
            dataset._cache[index].target_hr, dataset.build_lowres(pair_idx, slice_idx).target_hr
        )
    _break_nan_slice(fastmri_pairs)  # new data (a new identity) that fails on slice 1
    broken = _datamodule(fastmri_pairs, workers=2).build_dataset("train")
    with pytest.raises(DataError) as raised:
        broken.fill_shared_cache(cache_dir, workers=2)
    assert "\n" not in str(raised.value)
    assert str(raised.value).endswith("file0_pdfs.h5: slice 1 k-space contains NaN or inf")
    folders = [p for p in slices.iterdir() if p.is_dir()]
    assert [p.name for p in folders] == [dataset._cache.folder.name]  # no partial, no new folder


def test_the_shared_cache_is_written_only_into_a_folder_cmfnet_owns(fastmri_pairs):
    cache_dir = fastmri_pairs / "mine"
    cache_dir.mkdir()
    (cache_dir / "notes.txt").write_text("a user's file")
    dataset = _datamodule(fastmri_pairs, workers=0).build_dataset("train")
    with pytest.raises(ForeignPathError, match=r"^data.cache_dir: .*mine holds files"):
        dataset.fill_shared_cache(cache_dir)
    assert sorted(p.name for p in cache_dir.iterdir()) == ["notes.txt"]
    with pytest.raises(ValueError, match="data.shared_cache: true needs data.cache_dir"):
        JointDataModule(
            root=str(fastmri_pairs), splits={}, mask_func=None, scale=2, shared_cache=True
        )


@pytest.fixture
def large_pairs(tmp_path):
    """Two pairs of 10 slices at HR 256 (k-space 512x280): a 10.5 MB cache at x2, big enough to
    show in a process's memory."""
    rng = np.random.default_rng(2)
    (tmp_path / "large").mkdir()
    for i in range(2):
        for kind in ("pd", "pdfs"):
            write_fastmri_file(
                tmp_path / "large" / f"v{i}_{kind}.h5", smooth_images(rng, 10, 256), cols=280
            )
    (tmp_path / "large.csv").write_text("v0_pd.h5,v0_pdfs.h5\nv1_pd.h5,v1_pdfs.h5\n")
    return tmp_path


@pytest.mark.slow  # four processes that start torch
def test_two_ranks_share_one_filled_copy_and_see_the_single_process_batches(large_pairs):
    reference = large_split(large_pairs)
    reference.cache_lowres = False
    cache_bytes = sum(value.nbytes for value in vars(reference.checked_lowres(0)).values()) * len(
        reference
    )
    assert cache_bytes > 10e6
    results = {}
    for shared in (False, True):
        torch.multiprocessing.start_processes(
            run_rank,
            args=(large_pairs, shared),
            nprocs=2,
            start_method="spawn",  # fresh processes, as Lightning starts DDP ranks
        )
        results[shared] = [
            torch.load(large_pairs / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)
        ]
    # before: each rank degrades and holds every slice
    assert [r["filled"] for r in results[False]] == [20, 20]
    assert all(r["grown"] > 0.9 * cache_bytes for r in results[False]), [
        r["grown"] for r in results[False]
    ]
    # after: one rank fills, the other waits; neither holds the cache in its own memory, both
    # map the same files
    assert sorted(r["filled"] for r in results[True]) == [0, 20]
    assert all(r["grown"] < 0.2 * cache_bytes for r in results[True]), [
        r["grown"] for r in results[True]
    ]
    assert results[True][0]["folder"] == results[True][1]["folder"]
    for rank in (0, 1):
        expected = rank_items(reference, rank)
        for shared in (False, True):
            got = results[shared][rank]["items"]
            _assert_equal_batches(
                [collate_samples(got[i : i + 2]) for i in range(0, len(got), 2)],
                [collate_samples(expected[i : i + 2]) for i in range(0, len(expected), 2)],
            )


def test_a_cache_folder_another_process_is_still_marking_is_waited_for_not_refused(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / MARKER).write_text("")  # another rank has made the folder and is writing its marker
    marking = threading.Timer(0.15, mark, args=(cache, "cache"))
    marking.start()
    assert claim_slices_folder(cache) == cache / "slices"
    marking.join()
    assert owner_kind(cache / "slices") == "cache"
