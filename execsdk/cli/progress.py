"""The progress bar of ``execsdk fs put``/``get`` (on a terminal, for large transfers)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TextIO

from execsdk.cli.common import opt

__all__ = ["PROGRESS_MIN", "ProgressBar", "human_size", "progress_for"]

PROGRESS_MIN = 2 * 1024 * 1024
"""Transfers of at least this many bytes show a progress bar (on a terminal)."""


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class ProgressBar:
    """``label [=====>    ]  45%   2.3 MiB / 5.0 MiB   12.1 MiB/s``, redrawn in place.

    Used as the ``progress(done, total)`` callback of ``fs.upload``/``download``; stays silent
    for transfers under :data:`PROGRESS_MIN`. Thread-safety: one thread (the transfer's).
    """

    interval = 0.1

    def __init__(self, label: str, stream: TextIO, *, min_total: int = PROGRESS_MIN) -> None:
        self._label = label
        self._stream = stream
        self._min_total = min_total
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        if total < self._min_total:
            return
        now = time.monotonic()
        if done < total and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        self._draw(done, total, now)

    def _width(self) -> int:
        try:
            columns = os.get_terminal_size(self._stream.fileno()).columns
        except (OSError, ValueError):
            columns = 0
        return columns if columns > 0 else 80  # a fresh pty reports 0 columns

    def _draw(self, done: int, total: int, now: float) -> None:
        fraction = done / total if total else 1.0
        elapsed = max(now - self._started, 1e-6)
        # Fixed-width fields keep the bar from jittering as the numbers grow.
        tail = (
            f" {fraction * 100:3.0f}%  {human_size(done):>10} / {human_size(total)}"
            f"  {human_size(done / elapsed):>10}/s"
        )
        width = self._width() - 1
        label = self._label
        room = width - len(tail) - 4
        if room < 10 + len(label):
            label = label[: max(0, room - 10)]
        bar_width = max(room - len(label), 0)
        filled = int(bar_width * fraction)
        arrow = ">" if filled < bar_width else ""
        bar = ("=" * filled + arrow).ljust(bar_width)
        line = f"{label} [{bar}]{tail}" if bar_width else f"{label}{tail}"
        self._stream.write("\r" + line[:width])
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the bar's line (also after a failure, so an error message starts afresh)."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False


def progress_for(args: argparse.Namespace, label: str) -> ProgressBar | None:
    """A progress bar on stderr, only when stderr is a terminal and ``--quiet`` is not given."""
    if opt(args, "quiet", False) or not sys.stderr.isatty():
        return None
    return ProgressBar(label, sys.stderr)
