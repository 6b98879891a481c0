"""A log stream whose first write is interrupted by a signal to this process, as a signal that
lands while logging writes into run.log or the console."""

from __future__ import annotations

import io
import logging
import os
import signal
from typing import Optional


class SignalledFile(io.RawIOBase):
    """A raw file whose first write sends ``signum`` (None: no signal) to this process, whose
    handler runs inside that write when the writing thread is the main thread; ``data`` holds
    what was written."""

    def __init__(self, signum: Optional[int] = signal.SIGTERM):
        self.data, self.sent, self.signum = bytearray(), signum is None, signum

    def writable(self) -> bool:
        return True

    def write(self, chunk) -> int:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)
            sum(range(10))  # a handler of the main thread runs here, inside the buffered write
        self.data += bytes(chunk)
        return len(chunk)

    def lines(self) -> list[str]:
        return self.data.decode().splitlines()


def handler_into(stream: SignalledFile, failed: list) -> logging.StreamHandler:
    """A log handler writing into ``stream`` through a buffered writer, as a FileHandler does;
    what logging reports as a failed write (a reentrant call) is appended to ``failed``."""
    handler = logging.StreamHandler(io.TextIOWrapper(io.BufferedWriter(stream), write_through=True))
    handler.handleError = failed.append
    return handler
