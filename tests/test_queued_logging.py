"""Logging from a thread of its own while a job runs (:mod:`cmfnet.runs.queued_logging`): a
signal handler that logs (Lightning's, submitit's) cannot break a write in progress."""

from __future__ import annotations

import logging
import signal
import time

import pytest
from helpers.signalled_file import SignalledFile, handler_into

from cmfnet.runs.queued_logging import queued_logging


@pytest.fixture
def sigterm_logs():
    """A SIGTERM handler that logs from inside the handler, as Lightning's and submitit's do."""
    previous = signal.signal(
        signal.SIGTERM,
        lambda signum, frame: logging.getLogger("lightning.pytorch").info("Received SIGTERM"),
    )
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def run_log():
    """run.log on the root logger (as Hydra's job logging), interrupted by SIGTERM once."""
    stream, failed = SignalledFile(), []
    handler = handler_into(stream, failed)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    yield stream, failed, handler
    root.removeHandler(handler)
    root.setLevel(level)


def test_without_the_queue_a_handler_that_logs_breaks_the_write_it_interrupts(
    sigterm_logs, run_log
):
    stream, failed, _ = run_log
    logging.getLogger("cmfnet.lit.progress").info("epoch 3 done")
    assert failed  # the reentrant write this module exists for


def test_with_the_queue_both_lines_are_written_in_order_and_the_handlers_put_back(
    sigterm_logs, run_log
):
    stream, failed, handler = run_log
    submitit = logging.getLogger("test_queued_logging.submitit")
    own_stream, own_failed = SignalledFile(signum=None), []
    own = handler_into(own_stream, own_failed)
    own.setLevel(logging.WARNING)
    submitit.addHandler(own)
    try:
        with queued_logging():
            assert handler not in logging.getLogger().handlers and own not in submitit.handlers
            logging.getLogger("cmfnet.lit.progress").info("epoch 3 done")
            deadline = time.monotonic() + 10
            while len(stream.lines()) < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            submitit.info("below the handler's level")
            submitit.warning("Bypassing signal SIGCONT")
        assert handler in logging.getLogger().handlers and submitit.handlers == [own]
    finally:
        submitit.removeHandler(own)
    assert not failed and not own_failed
    assert stream.lines() == [
        "epoch 3 done",
        "Received SIGTERM",
        "below the handler's level",
        "Bypassing signal SIGCONT",
    ]
    assert own_stream.lines() == ["Bypassing signal SIGCONT"]
