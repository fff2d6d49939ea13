"""Preemption: SIGUSR1 / SIGTERM ask the loop to save its state at the next step boundary and exit.

SLURM sends SIGUSR1 ahead of the time limit (``--signal``) and SIGTERM on preemption. The loop
then exits with :data:`EXIT_PREEMPTED`, so a wrapper can requeue the job and ``dvc repro``
resumes from the saved state.
"""

from __future__ import annotations

import signal

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again later"


class StopRequest:
    """Installs the handlers; ``requested`` becomes the signal name once one arrives."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGUSR1, signal.SIGTERM)):
        self.requested: str | None = None
        self._previous = {s: signal.signal(s, self._handle) for s in signals}

    def _handle(self, signum, frame) -> None:
        self.requested = signal.Signals(signum).name

    def restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


class Preempted(SystemExit):
    """Raised after the state is saved; exits the process with EXIT_PREEMPTED."""

    def __init__(self, signame: str):
        super().__init__(EXIT_PREEMPTED)
        self.signame = signame
