"""The per-slice LR cache as files that every training process of a node maps: one copy in the
page cache, however many DDP ranks (and jobs of a sweep) read it.

Layout: ``<data.cache_dir>/slices/<key>/`` holds one ``.npy`` file per
:class:`~cmfnet.mri.degrade.LowResPair` field, shaped (slices, *field shape), beside
``identity.json`` (what it was made from) and ``COMPLETE``. ``<key>`` is a digest of everything
the degraded slices depend on: the dataset class and its degradation settings, its slice list,
each file's path, size and modification time, the source of the reading and degradation code,
and numpy's version. Changed data or code gets a new folder; a folder is never reused for
other data.

Filling (:func:`fill_shared`): under an exclusive lock on ``slices/.<key>.lock``, the first
process finds no complete folder, removes the partial folders a killed fill left (cmfnet's, by
their marker), fills a private ``.<key>.partial-*`` folder in DataLoader worker processes that
write straight into the mapped files, syncs it to disk, writes ``COMPLETE`` and renames it into
place. Every other process (the other ranks of a DDP run, other jobs) blocks on the lock
meanwhile and then maps the complete folder read-only (:class:`SliceCache`).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cmfnet.data.workers import LowResView, collate_as_is, load_in_workers
from cmfnet.mri.degrade import LowResPair
from cmfnet.runs.errors import DataError, one_line
from cmfnet.runs.io import permissions_for_new
from cmfnet.runs.ownership import ForeignPathError, claim_folder, mark, owner_kind, remove_owned

log = logging.getLogger(__name__)

#: the cached fields, in :class:`LowResPair` order
FIELDS = tuple(field.name for field in dataclasses.fields(LowResPair))
COMPLETE_MARKER = "COMPLETE"
IDENTITY = "identity.json"
#: modules whose source decides the cached values besides the dataset's own module
DEGRADATION_MODULES = ("cmfnet.mri.degrade", "cmfnet.mri.kspace")


def claim_slices_folder(cache_dir: str | Path, attempts: int = 5) -> Path:
    """``<cache_dir>/slices``, both folders claimed (created and marked) as cmfnet's cache;
    a folder holding files cmfnet did not write is refused.

    Processes that start together (the ranks of a node, the jobs of a sweep) may claim a new
    folder at once: one of them can see the folder another has just made, holding only the
    marker that one is still writing, which reads as not cmfnet's. So a refusal is checked
    again ``attempts`` times, 0.1 s apart, before it is final.
    """
    for attempt in range(attempts):
        try:
            claim_folder(Path(cache_dir), "cache", setting="data.cache_dir")
            return claim_folder(Path(cache_dir) / "slices", "cache", setting="data.cache_dir")
        except ForeignPathError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)


def file_stamp(path: Path) -> list:
    """[resolved path, size in bytes, modification time in ns] of a data file."""
    stat = Path(path).stat()
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def source_digest(modules: Sequence[str]) -> str:
    """sha256 of the source files of the named (imported) modules, in order."""
    digest = hashlib.sha256()
    for name in modules:
        digest.update(Path(sys.modules[name].__file__).read_bytes())
    return digest.hexdigest()


def dataset_identity(dataset) -> dict:
    """What the degraded slices of a :class:`~cmfnet.data.paired.PairedSliceDataset` depend on,
    as plain JSON data: class, ``degradation_settings()``, slice list, data files and code."""
    kind = type(dataset)
    pairs = sorted({pair for pair, _ in dataset.slices})
    return {
        "dataset": f"{kind.__module__}.{kind.__qualname__}",
        "settings": dataset.degradation_settings(),
        "slices": [[int(pair), int(index)] for pair, index in dataset.slices],
        "files": {str(pair): [file_stamp(p) for p in dataset.pair_paths(pair)] for pair in pairs},
        "code": source_digest((kind.__module__, *DEGRADATION_MODULES)),
        "numpy": np.__version__,
    }


def identity_key(identity: dict) -> str:
    """The cache folder name of an identity: 24 hex digits of the sha256 of its JSON."""
    text = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class SliceCache(Mapping):
    """Read-only map index -> :class:`LowResPair` over a complete cache folder.

    The files are memory-mapped on first use in each process, so every process that maps them
    shares one copy in the page cache; a pickled ``SliceCache`` (a DataLoader worker started by
    spawn or forkserver) carries only the folder and maps the files again. Item i's arrays are
    read-only views of row i of each file: (h, w) complex64 LR k-space, (h, w) float32 rec
    target and auxiliary LR, (H, W) float32 HR target.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._arrays: Optional[dict[str, np.ndarray]] = None

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """Field name -> (slices, *shape) read-only array mapped from its file."""
        if self._arrays is None:
            self._arrays = {
                name: np.asarray(np.load(self.folder / f"{name}.npy", mmap_mode="r"))
                for name in FIELDS
            }
        return self._arrays

    @property
    def nbytes(self) -> int:
        """Bytes of cached data (the files' size less their headers)."""
        return sum(array.nbytes for array in self.arrays.values())

    def __len__(self) -> int:
        return self.arrays[FIELDS[0]].shape[0]

    def __contains__(self, index) -> bool:
        return isinstance(index, int) and 0 <= index < len(self)

    def __getitem__(self, index: int) -> LowResPair:
        if index not in self:
            raise KeyError(index)
        return LowResPair(**{name: array[index] for name, array in self.arrays.items()})

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self)))

    def __reduce__(self):
        return SliceCache, (self.folder,)


def fill_shared(dataset, cache_dir: str | Path, workers: int, desc: str) -> tuple[SliceCache, int]:
    """The complete shared cache of ``dataset`` under ``cache_dir``, filled first if no process
    has filled it (see the module's description), and how many slices this process degraded
    (0 when it mapped a cache another process filled)."""
    folder_root = claim_slices_folder(cache_dir)
    identity = dataset_identity(dataset)
    key = identity_key(identity)
    folder = folder_root / key
    with open(folder_root / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if folder.exists():
            cache = SliceCache(checked_folder(folder, identity))
            log.info("slice cache %s mapped (%.2f GB on disk)", folder, cache.nbytes / 1e9)
            return cache, 0
        for stale in folder_root.glob(f".{key}.partial-*"):
            if owner_kind(stale) == "cache":
                remove_owned(stale, "cache")
        partial = Path(tempfile.mkdtemp(dir=folder_root, prefix=f".{key}.partial-"))
        os.chmod(partial, permissions_for_new(0o777))
        mark(partial, "cache")
        try:
            write_slices(dataset, partial, workers, desc, setting=f"data.cache_dir={cache_dir}")
            (partial / IDENTITY).write_text(json.dumps(identity, sort_keys=True))
            (partial / COMPLETE_MARKER).write_text("")
            partial.rename(folder)
        except BaseException:
            remove_owned(partial, "cache")
            raise
    cache = SliceCache(folder)
    log.info("slice cache %s filled (%.2f GB on disk)", folder, cache.nbytes / 1e9)
    return cache, len(dataset)


def checked_folder(folder: Path, identity: dict) -> Path:
    """``folder`` if it is a complete cache that cmfnet made from ``identity``; else a one-line
    error."""
    record = folder / IDENTITY
    if owner_kind(folder) != "cache" or not (folder / COMPLETE_MARKER).is_file():
        raise DataError(
            f"{folder}: not a complete slice cache made by cmfnet; move it out of the cache or "
            "set data.cache_dir to another folder"
        )
    if json.loads(record.read_text()) != identity:
        raise DataError(
            f"{folder}: a slice cache of other data under the same name; remove it or set "
            "data.cache_dir to another folder"
        )
    return folder


def write_slices(dataset, folder: Path, workers: int, desc: str, setting: str) -> None:
    """Degrade every slice of ``dataset`` into new ``.npy`` files in ``folder``, in ``workers``
    DataLoader worker processes that write into the files themselves (0: in this process), then
    sync the files to disk. The files are allocated in full first (from slice 0's sizes), so a
    disk without room is a one-line error naming ``setting``, not a crash mid-fill."""
    first = first_slice(dataset, workers)
    count = len(dataset)
    try:
        for name in FIELDS:
            value = getattr(first, name)
            array = np.lib.format.open_memmap(
                folder / f"{name}.npy", mode="w+", dtype=value.dtype, shape=(count, *value.shape)
            )
            array[0] = value
            array.flush()
            del array
            with open(folder / f"{name}.npy", "r+b") as handle:
                os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
    except OSError as err:
        size = count * sum(getattr(first, name).nbytes for name in FIELDS)
        raise DataError(
            f"{setting}: cannot write the slice cache ({size / 1e9:.2f} GB) into {folder.parent} "
            f"({err.strerror or err}); free space there, choose another data.cache_dir, or set "
            "data.shared_cache=false"
        ) from None
    view = _FillView(dataset, folder, range(1, count))
    try:
        for _ in load_in_workers(view, workers, desc):
            pass
    finally:
        view.close()
    for name in FIELDS:
        with open(folder / f"{name}.npy", "r+b") as handle:
            os.fsync(handle.fileno())


def first_slice(dataset, workers: int) -> LowResPair:
    """Slice 0 of ``dataset`` degraded in a worker process (0 workers: in this one), so that a
    process with workers keeps none of the degradation's working memory."""
    if not workers:
        return dataset.checked_lowres(0)
    loader = DataLoader(
        LowResView(dataset, [0]),
        batch_size=None,
        num_workers=1,
        collate_fn=collate_as_is,
        generator=torch.Generator(),
    )
    try:
        ((_, pair),) = list(loader)
    except DataError as err:
        raise DataError(one_line(err)) from None
    return pair


class _FillView(Dataset):
    """Item k degrades slice ``indices[k]`` of ``dataset`` into row ``indices[k]`` of the files in
    ``folder`` (mapped for writing on first use in each process) and returns the index."""

    def __init__(self, dataset, folder: Path, indices: Sequence[int]):
        self.dataset = dataset
        self.folder = folder
        self.indices = list(indices)
        self.arrays: Optional[dict[str, np.memmap]] = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> int:
        if self.arrays is None:
            self.arrays = {
                name: np.load(self.folder / f"{name}.npy", mmap_mode="r+") for name in FIELDS
            }
        index = self.indices[k]
        pair = self.dataset.checked_lowres(index)
        for name, array in self.arrays.items():
            value = getattr(pair, name)
            if value.shape != array.shape[1:] or value.dtype != array.dtype:
                pair_idx, slice_idx = self.dataset.slices[index]
                raise DataError(
                    f"{self.dataset.pair_paths(pair_idx)[1]}: slice {slice_idx} degrades to "
                    f"'{name}' {value.dtype} {value.shape}, the split's first slice to "
                    f"{array.dtype} {array.shape[1:]}; a split's slices must share one size"
                )
            array[index] = value
        return index

    def close(self) -> None:
        """Unmap the files (in this process)."""
        self.arrays = None
