"""Logging that a signal handler cannot break: while a job runs, every log handler writes from a
thread of its own, fed through a queue.

Python runs a signal handler in the main thread, between two steps of whatever it was doing,
a write into run.log or the console included. A handler that logs there (Lightning's "Received
SIGTERM", submitit's "Bypassing signal SIGCONT", which ``scontrol requeue`` and pre-emption send
together) writes into a file whose write is still in progress, a reentrant call that logging
reports as an error with a traceback. :func:`queued_logging` replaces the handlers of every
logger that has some (Hydra's console and run.log on the root logger, submitit's own) with the
standard library's ``QueueHandler``, which only puts the record on a ``queue.SimpleQueue``
(whose ``put`` is safe to call from a signal handler); a ``QueueListener`` thread per logger
hands each record to the handlers it stands for, at their levels. At the end of the block every
queued record is written and the handlers are put back.
"""

from __future__ import annotations

import logging
import queue
from contextlib import contextmanager
from logging.handlers import QueueHandler, QueueListener
from typing import Iterator


def _loggers_with_handlers() -> list[logging.Logger]:
    """The root logger and every named logger that has handlers of its own."""
    named = list(logging.root.manager.loggerDict.values())  # one step: no thread adds one midway
    return [
        logger
        for logger in [logging.getLogger(), *named]
        if isinstance(logger, logging.Logger) and logger.handlers
    ]


@contextmanager
def queued_logging() -> Iterator[None]:
    """For the block, the handlers of every logger write from a listener thread (see the module
    doc); records still queued at the end, or queued while it ends, are written before the
    handlers are put back."""
    swapped: list[tuple[logging.Logger, QueueHandler, QueueListener]] = []
    for logger in _loggers_with_handlers():
        records: queue.SimpleQueue = queue.SimpleQueue()
        listener = QueueListener(records, *logger.handlers, respect_handler_level=True)
        stand_in = QueueHandler(records)
        listener.start()
        logger.handlers = [stand_in]  # one assignment: no record finds the logger with none
        swapped.append((logger, stand_in, listener))
    try:
        yield
    finally:
        for logger, stand_in, listener in swapped:
            listener.stop()  # after writing what was queued before this
            added = [h for h in logger.handlers if h is not stand_in]  # during the block
            logger.handlers = [*listener.handlers, *added]
            while not stand_in.queue.empty():  # queued while the listener stopped
                listener.handle(stand_in.queue.get())
