"""Logging that a signal handler cannot break: while a job runs, every log handler writes from a
thread of its own, fed through a queue.

Python runs a signal handler in the main thread, between two steps of whatever it was doing,
a write into run.log or the console included. A handler that logs there (Lightning's "Received
SIGTERM", submitit's "Bypassing signal SIGCONT", which ``scontrol requeue`` and pre-emption send
together) writes into a file whose write is still in progress, a reentrant call that logging
reports as an error with a traceback. :func:`queued_logging` replaces the handlers of every
logger that has some (Hydra's console and run.log on the root logger, submitit's own) with one
that only queues the record (``queue.SimpleQueue.put`` is safe to call from a signal handler);
a writer thread hands each record to the handlers it stands for. At the end of the block every
queued record is written and the handlers are put back.
"""

from __future__ import annotations

import logging
import queue
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

#: The name of the thread that writes the queued records.
WRITER_THREAD = "cmfnet-log-writer"

_active = False  # a block is in progress (an inner one leaves its queue in place)

_Item = Optional[tuple[tuple[logging.Handler, ...], logging.LogRecord]]


class _Queueing(logging.Handler):
    """Stands in for a logger's handlers: queues each record for them."""

    def __init__(self, targets: tuple[logging.Handler, ...], records: queue.SimpleQueue):
        super().__init__()
        self.targets, self.records = targets, records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.put((self.targets, record))


def _write(item: _Item) -> None:
    """Hand a queued record to each handler whose level it reaches (as ``Logger.callHandlers``)."""
    if item is None:
        return
    targets, record = item
    for handler in targets:
        if record.levelno >= handler.level:
            handler.handle(record)


def _write_until_stopped(records: queue.SimpleQueue) -> None:
    """The writer thread: write records until the ``None`` that ends the block."""
    while True:
        item = records.get()
        if item is None:
            return
        _write(item)


def _loggers_with_handlers() -> list[logging.Logger]:
    """The root logger and every named logger that has handlers of its own."""
    named = list(logging.root.manager.loggerDict.values())  # one step: no thread adds one midway
    return [logging.getLogger()] + [
        logger for logger in named if isinstance(logger, logging.Logger) and logger.handlers
    ]


@contextmanager
def queued_logging() -> Iterator[None]:
    """For the block, the handlers of every logger write from :data:`WRITER_THREAD` (see the
    module doc); records still queued at the end, or queued while it ends, are written before
    the handlers are put back. Nested blocks leave the outer one's queue in place."""
    global _active
    if _active:
        yield
        return
    records: queue.SimpleQueue = queue.SimpleQueue()
    swapped: list[tuple[logging.Logger, tuple[logging.Handler, ...], _Queueing]] = []
    for logger in _loggers_with_handlers():
        targets = tuple(logger.handlers)
        if not targets:
            continue
        stand_in = _Queueing(targets, records)
        for handler in targets:
            logger.removeHandler(handler)
        logger.addHandler(stand_in)
        swapped.append((logger, targets, stand_in))
    writer = threading.Thread(
        target=_write_until_stopped, args=(records,), name=WRITER_THREAD, daemon=True
    )
    writer.start()
    _active = True
    try:
        yield
    finally:
        _active = False
        try:
            records.put(None)
            writer.join()
        finally:
            for logger, targets, stand_in in swapped:
                logger.removeHandler(stand_in)
                for handler in targets:
                    logger.addHandler(handler)
            while not records.empty():
                _write(records.get())
