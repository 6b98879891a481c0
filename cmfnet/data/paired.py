"""Shared machinery of the paired-contrast slice datasets: indexing and the LR cache."""

from __future__ import annotations

from typing import Callable, Dict

from torch.utils.data import Dataset

from cmfnet.degrade import LowResPair


class PairedSliceDataset(Dataset):
    """Base class: ``self.slices`` lists (pair index, slice index); subclasses fill it and
    implement :meth:`build_lowres` and :meth:`target_name`.

    Item i is ``transform(LowResPair, target file name, slice index)``. The deterministic
    degradation of each slice is cached in memory after first use when ``cache_lowres`` is set
    (each DataLoader worker holds its own copy); only the mask is drawn per step.
    """

    def __init__(self, transform: Callable, cache_lowres: bool):
        self.transform = transform
        self.cache_lowres = cache_lowres
        self.slices: list[tuple[int, int]] = []
        self._cache: Dict[int, LowResPair] = {}

    def build_lowres(self, pair_idx: int, slice_idx: int) -> LowResPair:
        """Read and degrade one slice pair."""
        raise NotImplementedError

    def target_name(self, pair_idx: int) -> str:
        """File name of the target volume of a pair (seeds validation masks)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.slices)

    def lowres_pair(self, index: int) -> LowResPair:
        """The deterministic degradation of item ``index``."""
        if index in self._cache:
            return self._cache[index]
        pair = self.build_lowres(*self.slices[index])
        if self.cache_lowres:
            self._cache[index] = pair
        return pair

    def __getitem__(self, index: int):
        pair_idx, slice_idx = self.slices[index]
        return self.transform(self.lowres_pair(index), self.target_name(pair_idx), slice_idx)
