"""Preemption: SIGUSR1 / SIGTERM / SIGINT ask the loop to save its state at the next step boundary and exit.

SLURM sends SIGUSR1 ahead of the time limit (``--signal``) and SIGTERM on preemption; Ctrl-C
(SIGINT) does the same, so an interactive run can be stopped and resumed too. The loop then
exits with :data:`EXIT_PREEMPTED`, so a wrapper can requeue the job and ``dvc repro`` resumes
from the saved state. A second Ctrl-C stops at once, without saving (KeyboardInterrupt).
"""

from __future__ import annotations

import os
import signal
import time

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again later"
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
# A Ctrl-C reaches a data-parallel rank twice: from the terminal and forwarded by the launcher,
# milliseconds apart. Only a SIGINT this long after the first one means "stop now".
REPEAT_SIGINT_AFTER_S = 1.0


def ignore_stop_signals(*_args) -> None:
    """A DataLoader ``worker_init_fn``: the worker ignores :data:`STOP_SIGNALS`.

    A terminal's Ctrl-C, and SLURM's SIGTERM on preemption or cancellation, reach every process
    of the run, the loader's workers too. A worker killed by it makes the training process raise
    ("DataLoader worker ... is killed by signal") before it can save; ignoring them, the workers
    keep serving batches until the loop saves and shuts them down.
    """
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


class StopRequest:
    """Installs the handlers; ``requested`` becomes the signal name once one arrives.

    ``announce``: say on stderr, when the first SIGINT arrives, what happens next (rank 0 only).
    """

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS, announce: bool = True):
        self.requested: str | None = None
        self.announce = announce
        self._first_sigint: float | None = None
        self._previous = {s: signal.signal(s, self._handle) for s in signals}

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT:
            now = time.monotonic()
            if self._first_sigint is not None:
                if now - self._first_sigint >= REPEAT_SIGINT_AFTER_S:
                    raise KeyboardInterrupt
                return
            self._first_sigint = now
            if self.announce:
                # At once: the save may be a step or a validation away. os.write takes no lock
                # that the interrupted code could be holding (logging and print do).
                os.write(
                    2,
                    b"\nSIGINT (Ctrl-C): saving the state at the next step, then exiting "
                    b"(Ctrl-C again: stop now without saving)\n",
                )
        if self.requested is None:
            self.requested = signal.Signals(signum).name

    def restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


class Preempted(SystemExit):
    """Raised after the state is saved; exits the process with EXIT_PREEMPTED."""

    def __init__(self, signame: str):
        super().__init__(EXIT_PREEMPTED)
        self.signame = signame
