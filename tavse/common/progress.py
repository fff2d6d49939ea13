"""Progress of a long loop: a tqdm bar on a terminal, a plain log line every N seconds elsewhere.

A bar redraws itself with carriage returns; in a file or a SLURM log those redraws pile up into
one line of thousands of characters that buries everything else. When stderr is not a terminal
:func:`progress` therefore logs ``desc: n/total unit (p%), elapsed, ETA, rate`` at most every
:func:`progress_every` seconds (``$TAVSE_PROGRESS_EVERY``, default 30) and, for a loop that
keeps its bar (``leave=True``), one line when it ends.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm import tqdm

from tavse.common.logs import stderr_is_terminal

log = logging.getLogger("tavse.progress")

PROGRESS_EVERY_ENV = "TAVSE_PROGRESS_EVERY"
DEFAULT_PROGRESS_EVERY_S = 30.0
_LINE_FORMAT = (
    "{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f}%), {elapsed} elapsed, ETA {remaining}, {rate_fmt}{postfix}"
)
_END_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} in {elapsed} ({rate_fmt}){postfix}"


def progress_every() -> float:
    """Seconds between two progress lines off a terminal: ``$TAVSE_PROGRESS_EVERY`` (> 0) or 30."""
    raw = os.environ.get(PROGRESS_EVERY_ENV, "").strip()
    if not raw:
        return DEFAULT_PROGRESS_EVERY_S
    try:
        every = float(raw)
    except ValueError:
        raise ValueError(f"${PROGRESS_EVERY_ENV}={raw!r}: expected a number of seconds") from None
    if not every > 0:
        raise ValueError(f"${PROGRESS_EVERY_ENV}={raw!r}: expected a number of seconds > 0")
    return every


class LogProgress:
    """The part of tqdm's interface the project uses, reported as log lines."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        leave: bool = True,
        every: float | None = None,
    ):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.initial = initial
        self.leave = leave
        self.every = progress_every() if every is None else every
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:  # type: ignore[union-attr]
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _line(self, fmt: str) -> str:
        elapsed = time.monotonic() - self.start
        done = self.n - self.initial
        return tqdm.format_meter(
            self.n,
            self.total,
            elapsed,
            prefix=self.desc,
            unit=self.unit,
            rate=done / elapsed if done and elapsed > 0 else None,
            initial=self.initial,
            postfix=self.postfix or None,
            bar_format=fmt if self.total else "{desc}: {n_fmt} {unit}, {elapsed} elapsed, {rate_fmt}{postfix}",
        )

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.monotonic()
        if now - self.last >= self.every and not self.closed:
            self.last = now
            log.info(self._line(_LINE_FORMAT))

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.leave and self.n > self.initial:
            log.info(self._line(_END_FORMAT))


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    initial: int = 0,
    leave: bool = True,
    disable: bool = False,
) -> Any:
    """A tqdm bar when stderr is a terminal, else a :class:`LogProgress`; ``disable`` gives a silent one.

    Either supports iteration, ``update``, ``set_postfix``, ``close`` and ``with``.
    """
    if disable:
        return tqdm(iterable, total=total, disable=True)
    if stderr_is_terminal():
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, dynamic_ncols=True)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave)
