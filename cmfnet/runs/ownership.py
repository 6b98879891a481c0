"""Which folders and files cmfnet may write into, replace or delete: only those it made.

A folder that cmfnet creates (the synthetic-data cache and its data sets, run and sweep folders,
``cmfnet synth``/``predict``/``report``/``import-release`` outputs) holds a small marker file
naming what it is. cmfnet writes only into a folder that is new, empty, or carries its marker of
an accepted kind; any other folder, in particular one holding a user's files, is refused with a
one-line error that names it and what to do. Nothing here ever deletes a folder without that marker.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Iterable, Optional

MARKER = ".cmfnet-owned"
KINDS = ("cache", "synthetic", "run", "sweep", "predictions", "report", "imported")


class ForeignPathError(ValueError):
    """A folder or file that cmfnet did not make, where it would write or delete."""


def owner_kind(folder: Path) -> Optional[str]:
    """The kind recorded in ``folder``'s marker (``run``, ``sweep``, ...), or None if unmarked."""
    marker = Path(folder) / MARKER
    if not marker.is_file():
        return None
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return (
        record.get("kind")
        if isinstance(record, dict) and record.get("created_by") == "cmfnet"
        else None
    )


def mark(folder: Path, kind: str) -> None:
    """Record that cmfnet made ``folder`` (an existing folder) for ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"unknown folder kind {kind!r}; use one of {KINDS}")
    (Path(folder) / MARKER).write_text(json.dumps({"created_by": "cmfnet", "kind": kind}) + "\n")


def mark_earlier_folder(folder: Path, kind: str, made_by_cmfnet: Callable[[Path], bool]) -> None:
    """Mark an existing, unmarked ``folder`` as ``kind`` if ``made_by_cmfnet`` recognises it as
    written by cmfnet before it marked its folders (e.g. by Hydra's records beside cmfnet's)."""
    folder = Path(folder)
    if folder.is_dir() and owner_kind(folder) is None and made_by_cmfnet(folder):
        mark(folder, kind)


def claim_folder(folder: Path, kind: str, setting: str, accept: Iterable[str] = ()) -> Path:
    """Make ``folder`` cmfnet's to write into, or refuse it.

    A missing folder is created (with its parents) and marked; an empty one is marked; one
    already marked as ``kind`` or as a kind in ``accept`` is used as it is. Anything else
    raises :class:`ForeignPathError` naming ``setting`` (the option that chose the folder),
    the folder and what to do. Returns ``folder``.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ForeignPathError(f"{setting}: {folder} is a file, not a folder")
    if folder.is_dir():
        found = owner_kind(folder)
        if found in (kind, *accept):
            return folder
        if found is not None:
            raise ForeignPathError(
                f"{setting}: {folder} is a cmfnet {found} folder, not a {kind} folder; "
                "choose another folder"
            )
        if any(folder.iterdir()):
            raise ForeignPathError(
                f"{setting}: {folder} holds files that cmfnet did not write; choose a new "
                "or empty folder (cmfnet never writes into or deletes a folder it did not make)"
            )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        mark(folder, kind)
    except OSError as err:
        raise ForeignPathError(
            f"{setting}: cannot write into {folder} ({err.strerror or err})"
        ) from None
    return folder


def remove_owned(folder: Path, kind: str) -> None:
    """Delete ``folder`` if cmfnet made it as ``kind``; refuse any other folder."""
    folder = Path(folder)
    if owner_kind(folder) != kind:
        raise ForeignPathError(f"{folder}: not a cmfnet {kind} folder; refusing to delete it")
    shutil.rmtree(folder)


def check_replaceable_file(path: Path, setting: str, written_by: str) -> None:
    """Refuse to overwrite an existing file unless it is a JSON object that cmfnet wrote with
    ``"written_by": written_by`` (bench and evaluate results)."""
    path = Path(path)
    if not path.exists() or path.is_dir():
        return
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        record = None
    if not (isinstance(record, dict) and record.get("written_by") == written_by):
        raise ForeignPathError(
            f"{setting}: {path} exists and was not written by {written_by}; "
            "choose a new file name (cmfnet never overwrites a file it did not write)"
        )
