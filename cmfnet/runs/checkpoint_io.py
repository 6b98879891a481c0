"""Checkpoint files that are whole or absent: never a truncated ``last.ckpt``.

Lightning 2.6 writes a checkpoint through fsspec's transaction, whose temporary file lies in the
system's temporary folder: where that is another file system than the run folder (a node's local
``/tmp`` beside a shared one, the common case on a cluster), the final move is a copy into
``last.ckpt`` in place, and a kill during it leaves half a file. :class:`AtomicCheckpointIO`
writes each checkpoint to a hidden temporary file beside it and renames it over the old one, so
a pre-emption, an out-of-memory kill or a node failure during the write leaves the previous
checkpoint as it was. ``cmfnet.train`` gives it to every trainer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cmfnet.runs.io import atomic_path


def stale_partials(path: Path) -> list[Path]:
    """Temporary files of ``path`` that an earlier, killed write left beside it
    (``.<name>.<random>.tmp``, :func:`cmfnet.runs.io.atomic_path`'s names)."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpoint format, written to a temporary file in the
    checkpoint's folder, flushed to disk, then renamed over the checkpoint."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        path = Path(path)
        for partial in stale_partials(path):  # half-written by a process that was killed
            partial.unlink(missing_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
