"""The one progress reporter: a tqdm bar on a terminal, else a line every N items or seconds.

Used by ``camfast pseudo-label`` and by the dataset scans of :mod:`camfast.evaluation`.
"""

from __future__ import annotations

import math
import sys
import time

__all__ = ["Progress", "hms"]

MODES = ("auto", "bar", "lines", "none")


def hms(seconds: float) -> str:
    """``H:MM:SS`` (``"?"`` for an unknown time)."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Progress of ``total`` items on stderr.

    Args:
        total: the number of items.
        label: what is counted (the line's and the bar's prefix).
        mode: ``"auto"`` (a tqdm bar when stderr is a terminal and tqdm is installed, else
            lines), ``"bar"``, ``"lines"`` or ``"none"``.
        every: with lines, print after about this many items...
        interval: ...or this many seconds (whichever is given; both: either), and at the end.
        min_total: report nothing for fewer items (short scans stay quiet).
        enabled: False reports nothing (e.g. ranks other than 0).
        noun, unit: the items' name in lines (``"4/8 images"``) and in rates (``"img/s"``).

    ``update(n)`` adds ``n`` done items; ``done = k`` via :meth:`set`; :meth:`write` prints a
    message without breaking the bar; :meth:`close` ends the bar.
    """

    def __init__(self, total: int, label: str, mode: str = "auto", every: int | None = None,
                 interval: float | None = None, min_total: int = 0, enabled: bool = True,
                 noun: str = "items", unit: str = "it") -> None:
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.total, self.label, self.done, self.noun, self.unit = total, label, 0, noun, unit
        self.every, self.interval = every, interval
        self.t0 = self._last = time.perf_counter()
        self._next = every or 0
        self.bar = None
        self.lines = False
        if not enabled or mode == "none" or total < min_total:
            return
        if mode in ("auto", "bar"):
            try:
                from tqdm import tqdm
            except ImportError:  # optional: plain lines instead
                tqdm = None
            if tqdm is not None and (mode == "bar" or sys.stderr.isatty()):
                self.bar = tqdm(total=total, unit=unit, desc=label, file=sys.stderr, dynamic_ncols=True)
                return
        self.lines = True

    def set(self, done: int) -> None:
        self.update(done - self.done)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        if not self.lines:
            return
        now = time.perf_counter()
        due = self.done == self.total
        if self.every is not None and self.done >= self._next:
            due = True
            while self._next <= self.done:
                self._next += self.every
        if self.interval is not None and now - self._last >= self.interval:
            due = True
        if due:
            self._last = now
            dt = now - self.t0
            rate = self.done / dt if dt > 0 else 0.0
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            print(f"{self.label}: {self.done}/{self.total} {self.noun}, {rate:.1f} {self.unit}/s, ETA {hms(eta)}",
                  file=sys.stderr, flush=True)

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
