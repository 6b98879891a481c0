"""The CSV that pairs each target volume with its second-contrast volume (the CMF-Net release's
``*_split_less.csv``): reading it, finding it beside a split folder, and checking the files it
lists.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Optional, Sequence

from cmfnet.runs.errors import DataError, one_line

AUX_COLUMNS = ("pd_file", "pd", "aux_file", "aux")


TARGET_COLUMNS = ("pdfs_file", "pdfs", "target_file", "target")


OTHER_COLUMNS = ("score",)


PairsCsv = Optional[str | Path | Sequence[str | Path]]


def volume_name(cell: str) -> Optional[str]:
    """The file name a CSV cell stands for: as is when it ends in ``.h5``, else with ``.h5``
    added (the published CSVs name ``file1000685`` for ``file1000685.h5``). None when the cell
    cannot name a file: empty, a folder (``.``, ``..``, a trailing slash) or unprintable."""
    if not cell or not cell.isprintable() or cell.endswith(("/", "\\")):
        return None
    if Path(cell).name in ("", ".", ".."):
        return None
    return cell if cell.lower().endswith(".h5") else f"{cell}.h5"


def _header_columns(row: list[str], csv_path: Path, line_no: int) -> Optional[tuple[int, int]]:
    """(aux, target) column indices when ``row`` is a header (it names a known column), else
    None."""
    header = [cell.lower() for cell in row]
    if not set(header) & set(AUX_COLUMNS + TARGET_COLUMNS + OTHER_COLUMNS):
        return None
    aux = next((header.index(name) for name in AUX_COLUMNS if name in header), None)
    target = next((header.index(name) for name in TARGET_COLUMNS if name in header), None)
    if aux is None or target is None:
        raise DataError(
            f"{csv_path}: line {line_no} is a header but does not name both the 'pd_file' and "
            f"'pdfs_file' columns, got {row}"
        )
    return aux, target


def read_pairs_csv(csv_path: Path) -> list[tuple[str, str]]:
    """(pd_file, pdfs_file) file names of a pairing CSV, each ending in ``.h5`` (added where the
    CSV leaves it out). Without a header the first two columns are the auxiliary and the target
    file (MINet's layout) and further columns (a score) are ignored; a first row naming a known
    column (``pd_file``, ``pdfs_file``, ``aux``, ``target``, ``score``) is a header, which must
    name both files' columns, in any order. A UTF-8 BOM is skipped. A file may be the target of
    one pair only and is never paired with itself."""
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: pairing CSV not found")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{csv_path}: not a readable CSV text file ({one_line(err)})") from err
    pairs = []
    columns = None
    for line_no, row in enumerate(rows, start=1):
        row = [cell.strip() for cell in row]
        if not any(row):
            continue
        if columns is None:
            columns = _header_columns(row, csv_path, line_no)
            if columns is not None:
                continue
            columns = (0, 1)
        names = [volume_name(row[i]) if i < len(row) else None for i in columns]
        if None in names:
            raise DataError(
                f"{csv_path}: line {line_no} needs 'pd_file,pdfs_file[,score]' (names with or "
                f"without .h5), got {row}"
            )
        if names[0] == names[1]:
            raise DataError(f"{csv_path}: line {line_no} pairs {names[0]} with itself")
        pairs.append((names[0], names[1]))
    if not pairs:
        raise DataError(f"{csv_path}: no pairs listed")
    seen: set[str] = set()
    for pd_file, pdfs_file in pairs:
        if pdfs_file in seen:
            raise DataError(f"{csv_path}: target file {pdfs_file} is listed in more than one pair")
        seen.add(pdfs_file)
    return pairs


def pairs_csv_candidates(folder: str | Path) -> list[Path]:
    """Where the pairing CSV of split folder ``folder`` may lie: ``<folder>/<name>_split_less.csv``
    (the CMF-Net release) and ``<folder>/../<name>_split_less.csv`` (MINet, ``cmfnet synth``)."""
    folder = Path(os.path.abspath(folder))  # not resolve(): a symlinked folder keeps its name
    name = f"{folder.name}_split_less.csv"
    return [folder / name, folder.parent / name]


def find_pairs_csv(pairs_csv: PairsCsv, folder: str | Path) -> Path:
    """The pairing CSV of split folder ``folder``.

    ``pairs_csv`` is one path (returned as is; :func:`read_pairs_csv` reports it missing), a list
    of candidate paths or None for :func:`pairs_csv_candidates`. Of candidates, the first that
    exists is used; none existing is one error listing every path tried. Two existing copies that
    list different pairs are refused: the split would otherwise depend on the candidates' order.
    """
    if isinstance(pairs_csv, (str, Path)):
        return Path(pairs_csv)
    candidates = (
        pairs_csv_candidates(folder) if pairs_csv is None else [Path(str(p)) for p in pairs_csv]
    )
    if not candidates:
        raise DataError(f"{folder}: pairs_csv lists no candidate path")
    found = [path for path in candidates if path.is_file()]
    if not found:
        others = "".join(f", nor at {path}" for path in candidates[1:])
        raise DataError(f"{candidates[0]}: pairing CSV not found{others}")
    pairs = read_pairs_csv(found[0]) if len(found) > 1 else None
    for other in found[1:]:
        if read_pairs_csv(other) != pairs:
            raise DataError(
                f"{other}: lists other pairs than {found[0]}; remove one or name the one to "
                "use in pairs_csv"
            )
    return found[0]


def listed_file(folder: Path, name: str, csv_path: Path) -> Path:
    """``folder / name`` for a name listed in ``csv_path``, checked to be a file."""
    path = folder / name
    try:
        found = path.is_file()
    except OSError as err:  # e.g. a name longer than the file system allows
        raise DataError(
            f"{csv_path}: cannot look up {name!r} in {folder} ({one_line(err)})"
        ) from err
    if not found:
        raise DataError(f"{path}: file not found (listed in {csv_path})")
    return path
