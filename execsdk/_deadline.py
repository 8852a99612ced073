"""One monotonic deadline shared by every step of a blocking operation, and the UNSET sentinel."""

from __future__ import annotations

import enum
import time
from typing import Final, Union

__all__ = ["UNSET", "Deadline", "Timeoutish", "Unset", "resolve_timeout"]


class Unset(enum.Enum):
    """Type of :data:`UNSET`: "argument not passed", as opposed to ``None`` ("no limit")."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET

Timeoutish = Union[float, None, Unset]  # noqa: UP007 (a runtime alias on 3.10)
"""A ``timeout=`` argument: seconds, ``None`` for no limit, or :data:`UNSET` for the default."""


def resolve_timeout(timeout: Timeoutish, default: float | None) -> float | None:
    """Return ``default`` when ``timeout`` was not passed, else ``timeout`` itself."""
    if timeout is UNSET:
        return default
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
    return timeout


class Deadline:
    """Turns one timeout into the time left for each step. ``None`` means no limit.

    Thread-safety: immutable after construction; safe to share.
    """

    __slots__ = ("_end", "total")

    def __init__(self, timeout: float | None) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
        self.total = timeout
        self._end = None if timeout is None else time.monotonic() + timeout

    def left(self) -> float | None:
        """Seconds left (never negative), or ``None`` when there is no limit."""
        if self._end is None:
            return None
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        """True once the time is up (never for an unlimited deadline)."""
        return self._end is not None and time.monotonic() >= self._end

    def __repr__(self) -> str:
        return f"Deadline(total={self.total!r}, left={self.left()!r})"
