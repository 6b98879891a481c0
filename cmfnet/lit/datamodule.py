"""LightningDataModule over the paired-contrast slice datasets."""

from __future__ import annotations

import functools
import logging
import math
import time
from pathlib import Path
from typing import Callable, Mapping, Optional

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cmfnet.data.ixi import IXI_NAME
from cmfnet.data.paired import PairedSliceDataset
from cmfnet.data.slice_cache import claim_slices_folder
from cmfnet.data.synth_cache import ensure_dataset
from cmfnet.data.transforms import JointRecSRTransform
from cmfnet.runs.config import is_int
from cmfnet.runs.errors import DataError

SPLITS = ("train", "val", "test")

log = logging.getLogger(__name__)


def collate_samples(samples):
    """Stack :class:`JointSample` items; names and slice indices stay Python lists.

    In a DataLoader worker, the tensor fields of one dtype are stacked into views of a single
    shared-memory buffer. Every tensor storage that crosses to the training process costs a
    shared-memory file and a file descriptor of its own; one buffer instead of seven cut the
    training process's CPU time per batch by about a third (docs/performance.md).
    """
    first = samples[0]
    fields = {name: [getattr(s, name) for s in samples] for name in first._fields}
    tensors = {
        name: values for name, values in fields.items() if isinstance(values[0], torch.Tensor)
    }
    in_worker = torch.utils.data.get_worker_info() is not None
    for dtype in dict.fromkeys(values[0].dtype for values in tensors.values()):
        shapes = {
            name: (len(samples), *values[0].shape)
            for name, values in tensors.items()
            if values[0].dtype == dtype
        }
        buffer = flat_buffer(
            sum(math.prod(shape) for shape in shapes.values()), dtype, shared=in_worker
        )
        offset = 0
        for name, shape in shapes.items():
            size = math.prod(shape)
            fields[name] = torch.stack(
                tensors[name], out=buffer[offset : offset + size].view(shape)
            )
            offset += size
    return type(first)(**fields)


def flat_buffer(numel: int, dtype: torch.dtype, shared: bool) -> torch.Tensor:
    """An uninitialised 1-D tensor; with ``shared``, allocated in shared memory from the start
    (as torch's ``default_collate`` does in workers), so sending it copies nothing."""
    if not shared:
        return torch.empty(numel, dtype=dtype)
    return torch.empty(0, dtype=dtype).set_(
        torch.UntypedStorage._new_shared(numel * dtype.itemsize)
    )


class EpochSeededSampler(Sampler[int]):
    """Shuffles with a generator seeded by (seed, epoch) and restarts the training masks'
    stream for that epoch, so a run resumed from an epoch-end checkpoint sees exactly the
    batches and masks of an uninterrupted one. Lightning calls :meth:`set_epoch`.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.transform.set_stream(self.seed, epoch, worker=0)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(len(self.dataset), generator=generator).tolist())


def _seed_worker_masks(worker_id: int, sampler: EpochSeededSampler) -> None:
    """Give each DataLoader worker its own mask stream for the current epoch."""
    sampler.dataset.transform.set_stream(sampler.seed, sampler.epoch, worker=worker_id)


class JointDataModule(L.LightningDataModule):
    """Train/val/test loaders of joint rec + SR samples.

    Args:
        root: the data folder (checked before the splits are built; the synthetic set is made here).
        splits: ``{split: dataset factory}``; each factory takes ``scale`` and ``transform``
            (Hydra ``_partial_`` dataset configs).
        mask_func: the mask function (``mask`` config group).
        scale: super-resolution factor.
        seed: seeds the training shuffle and mask stream per epoch.
        batch_size, num_workers, pin_memory: DataLoader settings (validation and test use
            ``eval_batch_size``).
        clamp: input clamp after instance normalisation (None:
            :data:`~cmfnet.data.transforms.INPUT_CLAMP`).
        fill_cache: degrade every slice of a split when it is set up (in ``num_workers``
            processes), so the DataLoader workers forked at every epoch share one full cache;
            without it each epoch's workers rebuild the cache from the files and lose it.
            Splits whose dataset has ``cache_lowres: false`` are not filled. Validation and
            test splits then find their volumes' maxima, the data ranges of the streaming
            metrics (:meth:`~cmfnet.data.paired.PairedSliceDataset.compute_volume_maxima`).
        shared_cache: with ``fill_cache``, keep the filled cache in files under
            ``cache_dir/slices`` that every training process of the node maps
            (:mod:`cmfnet.data.slice_cache`): one copy per node, not one per DDP rank, filled by
            the first process to get there with ``num_workers`` workers per rank of the node
            while the others wait, and reused by later runs on the same data and code.
        synthesize: generator settings; if given, the synthetic data set is generated into
            ``root`` on first use (once, under a lock) before the loaders are built.
        cache_dir: the project's cache folder, which must hold ``root`` when ``synthesize`` is
            given, and holds the shared slice cache (claimed and marked by cmfnet; a folder
            holding other files is refused).
    """

    def __init__(
        self,
        root: str,
        splits: Mapping[str, Callable[..., Dataset]],
        mask_func,
        scale: int,
        seed: int = 0,
        batch_size: int = 8,
        eval_batch_size: Optional[int] = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        clamp: Optional[float] = None,
        fill_cache: bool = True,
        shared_cache: bool = False,
        synthesize: Optional[Mapping] = None,
        cache_dir: Optional[str] = None,
    ):
        super().__init__()
        unknown = set(splits) - set(SPLITS)
        if unknown:
            raise ValueError(f"data.splits: unknown split(s) {sorted(unknown)}; use {SPLITS}")
        for key, value, least in (
            ("batch_size", batch_size, 1),
            ("eval_batch_size", eval_batch_size, 1),
            ("num_workers", num_workers, 0),
        ):
            if value is not None and (not is_int(value) or value < least):
                raise ValueError(f"data.{key} must be an integer >= {least}, got {value!r}")
        self.root = Path(root)
        self.splits = dict(splits)
        self.mask_func = mask_func
        self.scale = scale
        self.seed = seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.clamp = clamp
        self.fill_cache = fill_cache
        self.shared_cache = shared_cache
        self.synthesize = dict(synthesize) if synthesize else None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        if shared_cache and self.cache_dir is None:
            raise ValueError(
                "data.shared_cache: true needs data.cache_dir (a folder for the cache)"
            )
        self.datasets: dict[str, Dataset] = {}

    def prepare_data(self) -> None:
        if self.shared_cache and self.fill_cache:  # once per node, before the ranks' set-up
            claim_slices_folder(self.cache_dir)
        if self.synthesize is not None:
            if self.cache_dir is None or not self.root.absolute().is_relative_to(
                self.cache_dir.absolute()
            ):
                raise DataError(
                    f"data.root={self.root}: data=synthetic generates its own data set inside "
                    f"data.cache_dir; to read this folder use {suggest_data_choice(self.root)}"
                )
            ensure_dataset(self.cache_dir, self.root, **self.synthesize)
        elif not self.root.is_dir():
            raise DataError(f"data.root={self.root}: folder not found")

    def build_dataset(self, split: str) -> Dataset:
        """Instantiate one split with its transform (random masks for train, seeded otherwise)."""
        if split not in self.splits:
            raise DataError(f"data.splits has no '{split}' split")
        transform = JointRecSRTransform(
            self.mask_func, seed_masks_by_name=split != "train", clamp=self.clamp
        )
        return self.splits[split](scale=self.scale, transform=transform)

    def setup(self, stage: Optional[str] = None) -> None:
        wanted = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",),
        }
        for split in wanted.get(stage, SPLITS) if stage else SPLITS:
            if split not in self.datasets and split in self.splits:
                self.datasets[split] = self.build_dataset(split)
                self.check_no_leak(split)
                if self.fill_cache and hasattr(self.datasets[split], "fill_cache"):
                    started = time.perf_counter()
                    added = self._fill(self.datasets[split], f"caching {split} slices")
                    if added:
                        log.info(
                            "cached %d %s slices in %.1f s",
                            added,
                            split,
                            time.perf_counter() - started,
                        )
                if split != "train" and hasattr(self.datasets[split], "compute_volume_maxima"):
                    self.datasets[split].compute_volume_maxima(self.num_workers)

    def _fill(self, dataset: PairedSliceDataset, desc: str) -> int:
        """Fill a split's cache: in this process's memory, or with ``shared_cache`` in the
        node's shared files, with ``num_workers`` workers for each rank of the node (the other
        ranks wait meanwhile). Returns how many slices this process degraded."""
        if not self.shared_cache:
            return dataset.fill_cache(self.num_workers, desc=desc)
        ranks = self.trainer.num_devices if self.trainer is not None else 1
        return dataset.fill_shared_cache(self.cache_dir, self.num_workers * ranks, desc=desc)

    def check_no_leak(self, split: str) -> None:
        """Refuse a target file that the training split shares with validation or test (a CSV row
        naming another split's file): its scores would measure memory, not generalisation.
        Validation and test may share files (fastMRI knee: test = val)."""

        def target_files(dataset: Optional[Dataset]) -> set[Path]:
            return dataset.target_files() if isinstance(dataset, PairedSliceDataset) else set()

        files = target_files(self.datasets[split])
        for other in ("val", "test") if split == "train" else ("train",):
            shared = files & target_files(self.datasets.get(other))
            if shared:
                raise DataError(
                    f"data.splits: {sorted(shared)[0]} is a target of both the {split} "
                    f"and the {other} split "
                    f"({len(shared)} shared file(s)); training files must not be scored"
                )

    def train_dataloader(self) -> DataLoader:
        sampler = EpochSeededSampler(self.datasets["train"], self.seed)
        ranks = self.trainer.world_size if self.trainer is not None else 1
        per_rank = -(
            -len(self.datasets["train"]) // ranks
        )  # Lightning's distributed sampler pads to equal shares
        return DataLoader(
            self.datasets["train"],
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=collate_samples,
            worker_init_fn=functools.partial(_seed_worker_masks, sampler=sampler)
            if self.num_workers
            else None,
            drop_last=per_rank % self.batch_size
            == 1,  # no trailing batch of 1 on any rank (MMF's BatchNorm)
        )

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.eval_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=collate_samples,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


def suggest_data_choice(folder: Path) -> str:
    """The ``data=`` option that reads ``folder``, judged from its contents (for error messages)."""
    folder = Path(folder)
    if not folder.is_dir():
        return (
            "data=fastmri_knee, data=isles or data=ixi with data.root=<an existing folder> "
            f"({folder} does not exist)"
        )
    if any(folder.glob("singlecoil_*")) or any(folder.glob("*.h5")):
        return f"data=fastmri_knee data.root={folder}"
    if any(IXI_NAME.match(p.name) for p in folder.rglob("IXI*")):
        return f"data=ixi data.root={folder}"
    if any(folder.glob("*/**/*.nii*")):
        return f"data=isles data.root={folder}"
    return (
        "data=fastmri_knee (fastMRI layout), data=isles (ISLES 2015 subject folders) or "
        f"data=ixi (IXI NIfTI files) with data.root={folder}"
    )
