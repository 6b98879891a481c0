"""One DDP-like rank for tests/test_data_cache.py, in a module of its own: a spawned rank imports
only torch and cmfnet's data code, not Lightning or the test module (seconds per process on 2
cores)."""

import multiprocessing
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from cmfnet.commands.bench.datapath import private_bytes
from cmfnet.data.fastmri import FastMRIPairDataset
from cmfnet.data.transforms import JointRecSRTransform
from cmfnet.mri.masks import RandomMaskFunc

#: how each rank reads its share, as Lightning's sampler does in one epoch
SAMPLER = {"num_replicas": 2, "shuffle": True, "seed": 3}
EPOCH = 1


def large_split(root: Path) -> FastMRIPairDataset:
    """The ``large`` split of ``root`` (fixture ``large_pairs``), masks seeded by file name."""
    transform = JointRecSRTransform(RandomMaskFunc([0.08], [4]), seed_masks_by_name=True)
    return FastMRIPairDataset(root / "large", root / "large.csv", scale=2, transform=transform)


def rank_items(dataset, rank: int) -> list:
    """The items rank ``rank`` reads in epoch ``EPOCH``, in order."""
    sampler = DistributedSampler(dataset, rank=rank, **SAMPLER)
    sampler.set_epoch(EPOCH)
    return [dataset[index] for index in sampler]


def run_rank(rank: int, root: Path, shared: bool) -> None:
    """Fill the split's cache as a rank of a 2-GPU node does at set-up (both ranks at once,
    after a gloo barrier): in its own memory with 1 worker, or in the shared files with 1 worker
    per rank of the node. Saves to ``root/rank<rank>.pt`` how many slices it degraded, how much
    its private memory grew meanwhile, the shared cache's folder, and the items it reads."""
    multiprocessing.set_start_method("fork", force=True)  # a rank's own default, not spawn's
    dist.init_process_group(
        "gloo", init_method=f"file://{root}/store-{shared}", rank=rank, world_size=2
    )
    dataset = large_split(root)
    dist.barrier()
    before = private_bytes()
    filled = (
        dataset.fill_shared_cache(root / "cache", workers=2)
        if shared
        else dataset.fill_cache(workers=1)
    )
    grown = private_bytes() - before
    torch.save(
        {
            "filled": filled,
            "grown": grown,
            "folder": str(dataset._cache.folder) if shared else None,
            "items": rank_items(dataset, rank),
        },
        root / f"rank{rank}.pt",
    )
    dist.destroy_process_group()
