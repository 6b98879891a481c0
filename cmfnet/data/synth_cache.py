"""Generate the synthetic data set once into the project's cache folder, safely under parallel jobs.

The cache folder (``data.cache_dir``, default ``.cache/cmfnet``) is claimed and marked by cmfnet
(:mod:`cmfnet.runs.ownership`); each data set is a sub-folder ``synthetic/<settings>`` that appears
complete or not at all. Nothing here removes a folder that cmfnet did not make.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Optional

from cmfnet.runs.errors import DataError
from cmfnet.runs.io import permissions_for_new
from cmfnet.runs.ownership import claim_folder, mark, owner_kind, remove_owned

COMPLETE_MARKER = "COMPLETE"
SYNTH_RECORD = "synth.json"
GENERATOR = "cmfnet.data.synth"


def ensure_dataset(cache_dir: Path, root: Path, **settings) -> Path:
    """Return ``root`` (a folder inside ``cache_dir``) holding a complete synthetic data set made
    with ``settings``.

    The first caller generates it into a private folder and renames it into place under an
    exclusive file lock; jobs that start together wait on the lock and then reuse it. Private
    folders left by a killed generator (marked as cmfnet's) are removed under the same lock.
    """
    from cmfnet.data.synth import generate_dataset

    cache = claim_folder(cache_dir, "cache", setting="data.cache_dir")
    root = Path(root)
    if not root.resolve().is_relative_to(cache.resolve()):
        raise DataError(
            f"data.root={root}: the synthetic data set lives inside data.cache_dir={cache_dir}"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if root.exists():
            return _checked(root, settings)
        for stale in root.parent.glob(f".{root.name}.partial-*"):
            if owner_kind(stale) == "synthetic":
                remove_owned(stale, "synthetic")
        partial = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.partial-"))
        os.chmod(partial, permissions_for_new(0o777))
        mark(partial, "synthetic")
        try:
            generate_dataset(partial, **settings)
            (partial / COMPLETE_MARKER).write_text(json.dumps(_jsonable(settings), sort_keys=True))
            partial.rename(root)
        except BaseException:
            remove_owned(partial, "synthetic")
            raise
    return root


def _checked(root: Path, settings: dict) -> Path:
    """``root`` if it is a complete cmfnet data set made with ``settings``; else a one-line
    error."""
    marker = root / COMPLETE_MARKER
    if owner_kind(root) != "synthetic" or not marker.is_file():
        raise DataError(
            f"{root}: not a complete synthetic data set made by cmfnet; move it out of the cache "
            "or set data.cache_dir to another folder"
        )
    recorded = json.loads(marker.read_text())
    if recorded != _jsonable(settings):
        raise DataError(
            f"{root}: cached synthetic data was made with {recorded}, not {_jsonable(settings)}; "
            "set data.cache_dir to another folder"
        )
    return root


def synthetic_record(root: Path) -> Optional[dict]:
    """The generator's record (``synth.json``) if ``root`` holds a data set written by
    ``cmfnet synth`` or the cache, else None: what a run reads from there is synthetic data."""
    path = Path(root) / SYNTH_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("generator") == GENERATOR else None


def _jsonable(settings: dict) -> dict:
    return json.loads(json.dumps(settings, sort_keys=True, default=str))
