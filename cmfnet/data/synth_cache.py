"""Generate the synthetic data set once into a cache folder, safely under parallel jobs."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

COMPLETE_MARKER = "COMPLETE"


def ensure_dataset(root: Path, **settings) -> Path:
    """Return ``root`` holding a complete synthetic data set made with ``settings``.

    The first caller generates it into a private folder and renames it into place under an
    exclusive file lock; jobs that start together wait on the lock and then reuse it. A folder
    without the completion marker (an interrupted run) is regenerated.
    """
    from cmfnet.data.synth import generate_dataset

    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    lock_path = root.parent / f".{root.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = root / COMPLETE_MARKER
        if marker.is_file():
            recorded = json.loads(marker.read_text())
            if recorded != _jsonable(settings):
                raise ValueError(
                    f"{root}: cached synthetic data was made with {recorded}, not {_jsonable(settings)}; "
                    "delete the folder or point data.root elsewhere"
                )
            return root
        partial = root.parent / f".{root.name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        generate_dataset(partial, **settings)
        (partial / COMPLETE_MARKER).write_text(json.dumps(_jsonable(settings), sort_keys=True))
        shutil.rmtree(root, ignore_errors=True)
        os.replace(partial, root)
    return root


def _jsonable(settings: dict) -> dict:
    return json.loads(json.dumps(settings, sort_keys=True, default=str))
