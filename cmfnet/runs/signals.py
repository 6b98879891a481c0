"""Stopping on SIGINT and SIGTERM: the job in progress is recorded as interrupted, then the process
exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM), which also ends a sweep.

:func:`install` (or the :func:`stop_on_signals` block) makes SIGINT and SIGTERM raise
:class:`Interrupted`, a ``SystemExit`` with that status, in the main thread. It is raised once:
a second signal while stopping is only logged, so the job can still write its record, and
:func:`deferred` holds the raise back while a record is written. A handler that another library
installed first is kept and only noted, so :func:`received` still tells that a stop was asked
for. Inside a submitit job, submitit's own handlers are replaced: SIGTERM (SLURM's pre-emption,
``scontrol requeue``, ``scancel``) stops the job like any other stop, and submitit's time-limit
signal (USR2) stops it too, after which :func:`requeue_if_timed_out` lets submitit requeue it,
once the job has recorded itself and closed W&B (requeueing makes SLURM send SIGTERM to every
process of the job, W&B's service process included).

A signal that arrives while a checkpoint is being saved (Lightning's ``save_checkpoint``) waits
until it is written, so last.ckpt is never left half-written. Python drops an exception raised
where it cannot propagate (a fork hook while a DataLoader starts its workers, a ``__del__``):
such an ``Interrupted`` is raised again. Both retry by sending the signal anew 50 ms later.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Any, Callable, Iterator, Optional

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Functions during which a stop waits (an exception there could leave a checkpoint half-written).
HOLD_IN = frozenset({"save_checkpoint", "_atomic_save"})
#: What ``scontrol requeue`` sends the job it requeues, ignored by the job that asked for it: it is
#: ending anyway, and submitit's handlers for them log from inside the requeue's own log write (a
#: reentrant write into run.log, which logging reports as an error with a traceback).
REQUEUE_SIGNALS = (signal.SIGCONT, signal.SIGTERM)
#: The name of the threads that log what a signal handler saw (:func:`_log_soon`).
LOG_THREAD = "cmfnet-signal-log"

_received: Optional[int] = None  # the last stop signal this process saw (raised on or only noted)
_stopping = False  # an Interrupted was raised, or waits for the end of a deferred() block
_pending: Optional[int] = None  # the signal whose Interrupted waits for the end of deferred()
_deferring = 0
_dropped = False  # the last Interrupted could not be raised (held back, or dropped by Python)
_owner_pid: Optional[int] = (
    None  # the process that installed the handlers (not a forked DataLoader worker)
)
_submitit_requeue: Optional[Callable] = None  # submitit's time-limit handler, run after the record


class Interrupted(SystemExit):
    """A stop signal arrived: exits with status 128 + the signal number unless caught."""

    def __init__(self, signum: int):
        super().__init__(128 + int(signum))
        self.signum = int(signum)

    def __str__(self) -> str:
        return f"stopped by {signal_name(self.signum)}"

    def __reduce__(self) -> tuple:  # pickles (to a sweep's launching process) with its signal
        return (Interrupted, (self.signum,))


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; the number for a signal Python does not name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def received() -> Optional[int]:
    """The stop signal this process received (SIGINT, SIGTERM or submitit's requeue signal), or
    None."""
    return _received


def stop_exception(err: BaseException) -> Optional[BaseException]:
    """What ends the process after ``err`` ended a job because a stop signal arrived: ``err``
    itself when it carries an exit status (:class:`Interrupted`; submitit's exit after
    requeueing the job), else ``Interrupted`` for the signal (e.g. after Lightning's own SIGTERM
    exit, or a DataLoader worker killed by the same signal); None when no stop signal arrived
    (the job failed on its own)."""
    if isinstance(err, Interrupted):
        return err
    signum = received()
    if signum is None and isinstance(err, KeyboardInterrupt):
        signum = signal.SIGINT
    if signum is None:
        return None
    if isinstance(err, SystemExit) and err.code not in (None, 0):
        return err
    return Interrupted(signum)


def _stop(signum: int, frame: Optional[FrameType]) -> None:
    """Our handler: note the signal and raise :class:`Interrupted` (at the end of a deferred
    block)."""
    global _received, _stopping, _pending, _dropped
    if os.getpid() != _owner_pid:  # a forked child (a DataLoader worker) that inherited the handler
        raise Interrupted(signum)
    _received = signum
    if _stopping and not _dropped:
        _log_soon("%s: already stopping", signal_name(signum))
        return
    if not _stopping:
        _log_soon(
            "%s: stopping (a job in progress is recorded as interrupted)", signal_name(signum)
        )
    _stopping, _dropped = True, False
    if _deferring:
        _pending = signum
        return
    if _saving_checkpoint(frame):
        _retry(signum)
        return
    raise Interrupted(signum)


def _log_soon(message: str, *args: Any) -> None:
    """A warning logged from a signal handler, in a thread of its own: the handler may have
    interrupted the main thread inside a write to the same log file or console, where a second
    write is a reentrant call that logging reports as an error with a traceback. The thread
    writes once that write is done (it is not a daemon, so the process waits for it)."""
    threading.Thread(
        target=log.warning, args=(message, *args), name=LOG_THREAD, daemon=False
    ).start()


def _saving_checkpoint(frame: Optional[FrameType]) -> bool:
    """Whether the main thread is inside one of :data:`HOLD_IN`."""
    while frame is not None:
        if frame.f_code.co_name in HOLD_IN:
            return True
        frame = frame.f_back
    return False


def _retry(signum: int) -> None:
    """Send ``signum`` to this process again in 50 ms, for an Interrupted that could not be
    raised."""
    global _dropped
    _dropped = True
    resend = threading.Timer(0.05, os.kill, (os.getpid(), signum))
    resend.daemon = True
    resend.start()


def _raise_again(unraisable: Any) -> None:
    """``sys.unraisablehook``: an :class:`Interrupted` that Python had to drop is raised again
    (the signal is sent anew shortly, when the main thread is most likely back in ordinary code);
    anything else goes to the hook installed before."""
    if not isinstance(unraisable.exc_value, Interrupted):
        _raise_again.previous(unraisable)  # type: ignore[attr-defined]
        return
    _retry(unraisable.exc_value.signum)


def _noting(previous: Callable) -> Callable:
    """A handler that notes the signal, then runs ``previous`` (another library's handler)."""

    def handler(signum: int, frame: Optional[FrameType]) -> Any:
        global _received
        _received = signum
        return previous(signum, frame)

    handler.cmfnet_noting = True  # type: ignore[attr-defined]
    return handler


def _submitit_signal() -> tuple:
    """submitit's time-out/pre-emption signal inside a submitit job (USR2 unless it is
    configured)."""
    if "SUBMITIT_FOLDER" not in os.environ:
        return ()
    found = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    return (found,) if found is not None else ()


def install() -> dict[int, Any]:
    """Make SIGINT and SIGTERM stop this process (see the module doc); note, but keep, handlers
    another library installed (and submitit's own signal). Returns the handlers replaced, for
    :func:`restore`; nothing happens outside the main thread or where ours are installed."""
    global _owner_pid
    if threading.current_thread() is not threading.main_thread():
        return {}
    _owner_pid = os.getpid()
    if sys.unraisablehook is not _raise_again:
        _raise_again.previous = sys.unraisablehook  # type: ignore[attr-defined]
        sys.unraisablehook = _raise_again
    global _submitit_requeue
    replaced = {}
    for signum in (*STOP_SIGNALS, *_submitit_signal()):
        current = signal.getsignal(signum)
        if current is _stop or getattr(current, "cmfnet_noting", False):
            continue
        if signum in STOP_SIGNALS and current in (signal.SIG_DFL, signal.default_int_handler):
            handler: Any = _stop
        elif _is_submitits(current):
            if signum not in STOP_SIGNALS:
                _submitit_requeue = current
            handler = _stop
        elif callable(current):
            handler = _noting(current)
        else:  # ignored (e.g. SIGINT of a background job), or set outside Python: left as it is
            continue
        replaced[signum] = current
        signal.signal(signum, handler)
    return replaced


def _is_submitits(handler: Any) -> bool:
    """Whether ``handler`` is one of submitit's (a method of its job's ``SignalHandler``)."""
    owner = getattr(handler, "__self__", None)
    return type(owner).__module__.startswith("submitit.")


def requeue_if_timed_out() -> None:
    """After a job stopped by submitit's time-limit signal has written its record: let submitit
    requeue it (its handler checkpoints the submission, calls ``scontrol requeue`` and exits).
    SIGCONT and SIGTERM, which the requeue makes SLURM send this job, are ignored from here on.
    Nothing happens after any other stop."""
    global _submitit_requeue
    requeue, _submitit_requeue = _submitit_requeue, None
    if requeue is not None and _received in _submitit_signal():
        log.info("requeueing the job (submitit)")
        for signum in REQUEUE_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        requeue(_received, None)


def restore(replaced: dict[int, Any]) -> None:
    """Put back the handlers :func:`install` replaced."""
    for signum, handler in replaced.items():
        signal.signal(signum, handler)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """:func:`install` for the block, then :func:`restore`."""
    replaced = install()
    try:
        yield
    finally:
        restore(replaced)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold back the :class:`Interrupted` of a signal that arrives in the block until its end
    (a record being written is finished first); an error in the block drops it."""
    global _deferring, _pending
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if not _deferring and _pending is not None:
        signum, _pending = _pending, None
        raise Interrupted(signum)


def _reset() -> None:
    """Forget every signal received (for tests)."""
    global _received, _stopping, _pending, _deferring, _dropped, _submitit_requeue
    _received, _stopping, _pending, _deferring, _dropped = None, False, None, 0, False
    _submitit_requeue = None
