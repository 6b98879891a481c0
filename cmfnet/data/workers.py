"""Degrading slices in DataLoader worker processes: the view that hands a paired dataset's
slices to the workers, the loop that reads them back, and the collate function that leaves
items as they are. Used by the in-memory cache (:mod:`cmfnet.data.paired`) and the shared one
(:mod:`cmfnet.data.slice_cache`)."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from cmfnet.mri.degrade import LowResPair
from cmfnet.runs.errors import DataError, one_line


class LowResView(Dataset):
    """Item k -> (index, dataset.lowres_pair(index)) for ``index = indices[k]``: lets DataLoader
    workers degrade slices of a :class:`~cmfnet.data.paired.PairedSliceDataset` for its cache."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]):
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[int, LowResPair]:
        index = self.indices[k]
        return index, self.dataset.lowres_pair(index)


def load_in_workers(view: Dataset, workers: int, desc: str) -> Iterator:
    """Every item of ``view``, loaded in ``workers`` DataLoader worker processes (0: this one)
    with a progress bar on a terminal; a :class:`DataError` comes as the one line that reading
    the item in this process gives."""
    from tqdm.auto import tqdm

    loader = DataLoader(
        view,
        batch_size=None,
        num_workers=workers,
        collate_fn=collate_as_is,
        generator=torch.Generator(),
    )  # its own seed source: the global RNG stays untouched
    try:
        yield from tqdm(loader, total=len(view), desc=desc, unit="slice", disable=None, leave=False)
    except DataError as err:
        raise DataError(one_line(err)) from None


def collate_as_is(item):
    """Collate function that leaves an item untouched (numpy arrays stay numpy arrays)."""
    return item
