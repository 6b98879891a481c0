"""Small file helpers: atomic writes so readers never see half a file."""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def check_writable_file(path: Path, setting: str, written_by: str) -> None:
    """Refuse, before any work, a file path that cannot be written: a folder, a path below
    something that is not a folder, or an existing file that is not a JSON record with
    ``"written_by": written_by`` (cmfnet replaces only what it wrote). ``setting`` names the
    option in the one-line error."""
    from cmfnet.runs.ownership import check_replaceable_file

    path = Path(path)
    existing = next(parent for parent in path.absolute().parents if parent.exists())
    if path.is_dir():
        raise ValueError(f"{setting}: cannot write a file there ({path} is a folder)")
    if not existing.is_dir():
        raise ValueError(f"{setting}: cannot write a file there ({existing} is not a folder)")
    check_replaceable_file(path, setting, written_by)


def permissions_for_new(mode: int) -> int:
    """``mode`` less the process's umask: what an ordinary new file (0o666) or folder (0o777)
    gets; ``tempfile`` makes its files and folders private to their owner instead."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path in ``path``'s folder to write to. When the block ends without error it is
    renamed over ``path``, with the permissions any new file gets (the umask's; a bare temporary
    file is private to its owner); otherwise it is removed and ``path`` is left as it was."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, not a file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, permissions_for_new(0o666))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file in the same folder, then rename it over ``path``."""
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def finite_or_none(data: Any) -> Any:
    """``data`` with every NaN or infinite float (nested in dicts, lists and tuples) set to None:
    JSON has no NaN or Infinity, and tools such as jq refuse files that hold them."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_or_none(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_none(value) for value in data]
    return data


def write_json_atomic(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented, standard JSON (NaN and infinities as null)."""
    text = json.dumps(finite_or_none(data), indent=2, sort_keys=True, default=str, allow_nan=False)
    write_text_atomic(path, text + "\n")
