"""Column undersampling masks with fastMRI 0.3.0 semantics, bit for bit.

A mask function owns a ``np.random.RandomState``. Calling it with a k-space ``shape`` (the
columns to undersample sit at axis -2, as in fastMRI's real-view tensors ``(..., rows, cols, 2)``)
returns ``(mask, num_low_frequencies)``: a float32 tensor of shape ``[1, ..., cols, 1]`` and the
number of fully sampled centre columns. Passing ``seed`` draws from a temporarily reseeded
generator and restores its state afterwards, so validation masks seeded by a volume's file name
are identical on every machine while training masks stay random.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch

Seed = Optional[Union[int, Sequence[int]]]


@contextlib.contextmanager
def temp_seed(rng: np.random.RandomState, seed: Seed) -> Iterator[None]:
    """Reseed ``rng`` for the duration of the block and restore its state afterwards."""
    if seed is None:
        yield
        return
    state = rng.get_state()
    rng.seed(seed)
    try:
        yield
    finally:
        rng.set_state(state)


def center_fraction_for(acceleration: float) -> float:
    """fastMRI's centre fraction for an acceleration: 4 -> 0.08, 8 -> 0.04 (0.32 / acceleration)."""
    if acceleration <= 1:
        raise ValueError(f"accel must be > 1, got {acceleration}")
    return round(0.32 / acceleration, 6)


def seed_from_name(name: str) -> tuple[int, ...]:
    """Mask seed of a volume: the character codes of its file name (fastMRI's convention)."""
    return tuple(map(ord, Path(name).name))


class MaskFunc:
    """Base class: picks a (centre fraction, acceleration) pair, then a centre and an outer mask.

    Args:
        center_fractions: fraction of columns kept at the k-space centre, one per acceleration.
        accelerations: undersampling factors (> 1), paired with ``center_fractions``.
        allow_any_combination: draw fraction and acceleration independently instead of in pairs.
        seed: seed of the owned random generator.
    """

    def __init__(
        self,
        center_fractions: Sequence[float],
        accelerations: Sequence[float],
        allow_any_combination: bool = False,
        seed: Seed = None,
    ):
        center_fractions = list(center_fractions)
        accelerations = list(accelerations)
        if not center_fractions or not accelerations:
            raise ValueError("mask: center_fractions and accelerations must not be empty")
        if len(center_fractions) != len(accelerations) and not allow_any_combination:
            raise ValueError(
                f"mask: {len(center_fractions)} center_fractions for {len(accelerations)} "
                "accelerations; give one per acceleration or set allow_any_combination"
            )
        for cf in center_fractions:
            if not 0 < cf < 1:
                raise ValueError(f"mask: center fraction must be in (0, 1), got {cf}")
        for acc in accelerations:
            if acc <= 1:
                raise ValueError(f"mask: acceleration must be > 1, got {acc}")
        self.center_fractions = center_fractions
        self.accelerations = accelerations
        self.allow_any_combination = allow_any_combination
        self.rng = np.random.RandomState(seed)

    def __call__(
        self, shape: Sequence[int], offset: Optional[int] = None, seed: Seed = None
    ) -> tuple[torch.Tensor, int]:
        """Draw a mask for k-space of ``shape`` (columns at axis -2):
        -> (mask, num_low_frequencies)."""
        if len(shape) < 3:
            raise ValueError(f"mask: shape needs 3 or more dimensions, got {tuple(shape)}")
        with temp_seed(self.rng, seed):
            num_cols = shape[-2]
            center_fraction, acceleration = self._choose_acceleration()
            num_low = round(num_cols * center_fraction)
            if num_low < 1:  # fastMRI would go on with no centre: an input of noise-like aliasing
                raise ValueError(
                    f"mask: center fraction {center_fraction} of {num_cols} k-space columns "
                    f"keeps no centre column (acceleration {acceleration}); "
                    "raise center_fraction or lower the acceleration"
                )
            center = self._center_mask(num_cols, num_low)
            outer = self._acceleration_mask(num_cols, acceleration, offset, num_low)
        mask = np.maximum(center, outer.astype(np.float32))
        mask_shape = [1] * len(shape)
        mask_shape[-2] = num_cols
        return torch.from_numpy(mask.reshape(mask_shape).astype(np.float32)), num_low

    def _choose_acceleration(self) -> tuple[float, float]:
        if self.allow_any_combination:
            return self.rng.choice(self.center_fractions), self.rng.choice(self.accelerations)
        choice = self.rng.randint(len(self.center_fractions))
        return self.center_fractions[choice], self.accelerations[choice]

    @staticmethod
    def _center_mask(num_cols: int, num_low: int) -> np.ndarray:
        mask = np.zeros(num_cols, dtype=np.float32)
        pad = (num_cols - num_low + 1) // 2
        mask[pad : pad + num_low] = 1
        return mask

    def _acceleration_mask(
        self, num_cols: int, acceleration: float, offset: Optional[int], num_low: int
    ) -> np.ndarray:
        raise NotImplementedError


class RandomMaskFunc(MaskFunc):
    """Centre block plus columns kept independently with the probability that gives
    ``num_cols / acceleration`` columns on average."""

    def _acceleration_mask(self, num_cols, acceleration, offset, num_low):
        prob = (num_cols / acceleration - num_low) / (num_cols - num_low)
        return self.rng.uniform(size=num_cols) < prob


class EquispacedMaskFunc(MaskFunc):
    """Centre block plus every ``acceleration``-th column from a random offset."""

    def _acceleration_mask(self, num_cols, acceleration, offset, num_low):
        if offset is None:
            offset = self.rng.randint(0, high=round(acceleration))
        mask = np.zeros(num_cols, dtype=np.float32)
        mask[offset :: int(acceleration)] = 1
        return mask


class EquispacedMaskFractionFunc(MaskFunc):
    """Centre block plus equispaced columns whose spacing is adjusted so that the overall
    fraction of kept columns is ``1 / acceleration``."""

    def _acceleration_mask(self, num_cols, acceleration, offset, num_low):
        adjusted = (acceleration * (num_low - num_cols)) / (num_low * acceleration - num_cols)
        if offset is None:
            offset = self.rng.randint(0, high=round(adjusted))
        mask = np.zeros(num_cols, dtype=np.float32)
        samples = np.around(np.arange(offset, num_cols - 1, adjusted)).astype(np.uint)
        mask[samples] = 1.0
        return mask


#: the first bytes of a MATLAB v7.3 file, which is HDF5 (after its 512-byte user block)
MAT_V73_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def read_npy_mask(path: Path) -> np.ndarray:
    """The array of a ``.npy`` mask file (no pickles); ValueError naming ``mask.path``."""
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":  # else numpy's error suggests unpickling the file
            raise ValueError(f"mask.path: {path} is not a .npy file (no NumPy header)")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"mask.path: {path} is not a readable .npy array ({err})") from err


def read_mat_mask(path: Path, key: Optional[str]) -> np.ndarray:
    """The mask array of a MATLAB ``.mat`` file: the variable ``key``, or its only numeric
    variable. MATLAB v7.3 files (HDF5) are read with h5py and transposed back to MATLAB's
    (rows, columns) order; older ones with ``scipy.io.loadmat``."""
    with open(path, "rb") as f:
        head = f.read(520)
    if MAT_V73_SIGNATURE in head[:8] + head[512:520]:
        import h5py

        with h5py.File(path, "r") as mat:
            arrays = {name: mat[name][()].T for name in mat if isinstance(mat[name], h5py.Dataset)}
    else:
        import scipy.io

        try:
            contents = scipy.io.loadmat(path)
        except (ValueError, TypeError, OSError, IndexError, NotImplementedError) as err:
            raise ValueError(f"mask.path: {path} is not a readable .mat file ({err})") from err
        arrays = {
            name: value
            for name, value in contents.items()
            if not name.startswith("__") and isinstance(value, np.ndarray)
        }
    numeric = {name: a for name, a in arrays.items() if np.issubdtype(a.dtype, np.number)}
    if key is not None:
        if key not in numeric:
            raise ValueError(
                f"mask.key: {path} has no numeric variable {key!r} (it has {sorted(numeric)})"
            )
        return numeric[key]
    if len(numeric) != 1:
        raise ValueError(
            f"mask.path: {path} holds {len(numeric)} numeric variables {sorted(numeric)}; "
            "name the mask with mask.key"
        )
    return next(iter(numeric.values()))


def column_mask(path: Path, array: np.ndarray) -> np.ndarray:
    """The 1-D column mask of a mask file's array: a 1-D mask as it is; a 2-D (rows, columns)
    mask whose every column is constant (all rows equal, as the CMF-Net release stores its
    mask) as its first row. ValueError naming ``mask.path`` otherwise."""
    array = np.asarray(array).squeeze()
    if array.ndim == 2:
        rows_equal = (array == array[:1]).all(axis=1)
        if not rows_equal.all():
            row = int(np.argmin(rows_equal))
            hint = (
                "; its rows are constant instead: transpose it (cmfnet samples whole phase-encode"
                " columns)"
                if (array == array[:, :1]).all()
                else ""
            )
            raise ValueError(
                f"mask.path: {path} is a 2-D mask whose columns are not constant (row {row} "
                f"differs from row 0){hint}"
            )
        array = array[0]
    return array


class FixedMaskFunc:
    """A frozen column mask read from a file of 0/1 values: a ``.npy`` (1-D, one value per
    column, or the CMF-Net release's 2-D column-constant mask) or a MATLAB ``.mat`` (T2Net's
    masks; ``key`` names the variable when the file holds several).

    The same mask is returned for every call (the ISLES protocol uses one frozen mask);
    ``num_low_frequencies`` is the length of the run of ones through the centre column.
    """

    def __init__(self, path: Union[str, Path], key: Optional[str] = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"mask.path: no mask file at {self.path}")
        if self.path.suffix.lower() == ".mat":
            columns = read_mat_mask(self.path, key)
        else:
            columns = read_npy_mask(self.path)
        columns = column_mask(self.path, columns)
        if columns.ndim != 1 or columns.size < 2:
            raise ValueError(
                f"mask.path: {self.path} must hold a 1-D column mask, got shape {columns.shape}"
            )
        if not np.isin(columns, (0, 1)).all():
            raise ValueError(f"mask.path: {self.path} must hold only 0 and 1 values")
        self.columns = columns.astype(np.float32)
        center = columns.size // 2
        if not self.columns[center]:
            raise ValueError(f"mask.path: {self.path} does not sample the centre column {center}")
        left, right = center, center
        while left > 0 and self.columns[left - 1]:
            left -= 1
        while right < columns.size - 1 and self.columns[right + 1]:
            right += 1
        self.num_low_frequencies = right - left + 1

    def __call__(
        self, shape: Sequence[int], offset: Optional[int] = None, seed: Seed = None
    ) -> tuple[torch.Tensor, int]:
        """Return the frozen mask shaped for ``shape`` (columns at axis -2)."""
        num_cols = shape[-2]
        if num_cols != self.columns.size:
            raise ValueError(
                f"mask.path: {self.path} has {self.columns.size} columns "
                f"but the k-space has {num_cols}"
            )
        mask_shape = [1] * len(shape)
        mask_shape[-2] = num_cols
        return torch.from_numpy(self.columns.reshape(mask_shape).copy()), self.num_low_frequencies
