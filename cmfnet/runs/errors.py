"""Every error cmfnet reports is one line: :func:`one_line` says which line.

Used where a command or job fails (``cmfnet <subcommand>``, ``run.py``'s ``metrics.json``) and
where cmfnet's own messages quote a library's error (``{path}: not a readable HDF5 file (...)``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, Optional

PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: types whose message stands alone: a bad value or a bad path; other library errors are named
PLAIN_TYPES = (ValueError, OSError)


class DataError(ValueError):
    """Raised for unreadable, inconsistent or non-finite input data: its message names the file
    and what is wrong."""


def one_line(err: BaseException) -> str:
    """``err`` as one line that says what went wrong and where.

    The line is the first line of the most telling error of the chain (``__cause__``, or
    ``__context__`` unless suppressed by ``from None``): the outermost :class:`DataError` (it
    names the file), else the outermost error raised by cmfnet's own code (it names the setting
    or file), else the outermost one whose message is more than a quote of its cause's (Hydra's
    ``Error in call to target ...``). A DataLoader worker's re-raise gives the worker's message.
    In front go the config key of an OmegaConf or Hydra error (``full_key``), or else the type of
    a library error that is neither a ValueError nor an OSError (``KeyError: 'x'``).
    """
    chain = list(_chain(err))
    telling = (
        next((e for e in chain if isinstance(e, DataError)), None)
        or next((e for e in chain if _raised_by_cmfnet(e)), None)
        or next(e for e in chain if not _quotes_cause(e))
    )
    message = _first_line(_worker_message(str(telling))) or type(telling).__name__
    key = getattr(err, "full_key", None)
    if key:
        return f"{key}: {message}"
    if (
        isinstance(telling, PLAIN_TYPES)
        or _raised_by_cmfnet(telling)
        or message == type(telling).__name__
    ):
        return message
    return f"{type(telling).__name__}: {message}"


def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and the errors it was raised from or during, outermost first, as Python's
    traceback shows them."""
    current: Optional[BaseException] = err
    while current is not None:
        yield current
        current = _shown_cause(current)


def _shown_cause(err: BaseException) -> Optional[BaseException]:
    """The error ``err`` was raised from, or else during, unless ``from None`` hid it."""
    return err.__cause__ or (None if err.__suppress_context__ else err.__context__)


def _first_line(text: str) -> str:
    """The first non-blank line of ``text``, stripped ('' when there is none)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _quotes_cause(err: BaseException) -> bool:
    """Whether ``err`` wraps an error whose message it only quotes (it then says no more)."""
    cause = _shown_cause(err)
    quoted = _first_line(str(cause)) if cause is not None else ""
    return bool(quoted) and quoted in str(err)


def _raised_by_cmfnet(err: BaseException) -> bool:
    """Whether ``err`` is a built-in or cmfnet error raised by this package's code (its message
    then names the file or setting), not a library's, nor a library's re-raise (OmegaConf gives
    its own errors the traceback of the error they wrap)."""
    if type(err).__module__.split(".")[0] not in ("builtins", "cmfnet"):
        return False
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(
        PACKAGE_DIR
    )


def _worker_message(message: str) -> str:
    """The original message of an error re-raised by a DataLoader worker.

    PyTorch re-raises a worker's exception in the parent with the message
    ``Caught DataError in DataLoader worker process 0.\\nOriginal Traceback ...``, whose last
    line is ``<module>.<Class>: <original message>``. Any other message is returned as it is.
    """
    lines = message.strip().splitlines()
    if len(lines) < 2 or not re.match(r"Caught \w+ in DataLoader worker process \d+", lines[0]):
        return message
    last = re.match(r"[\w.]+: (.*)", lines[-1].strip())
    return last.group(1) if last else lines[-1].strip()
