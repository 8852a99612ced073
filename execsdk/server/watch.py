"""``fs/watchMissing``: tell the client once when a path it waits for appears.

Behaviour probed on codex 0.169 (PROTOCOL.md §3.21):

- One watch per connection. A call with a ``watchId`` greater than every id seen before
  replaces the current watch; a smaller or repeated id is answered ``{"watching": false}`` and
  changes nothing.
- The answer is ``false`` (and no watch is left active) when ``missing`` is empty, when one
  of its paths already exists, when ``present`` is given but does not exist, or when a URI
  names a foreign host.
- Otherwise ``true``; the watch fires once, with ``fs/missingChanged {"watchId"}``, as soon as
  the first missing component of any ``missing`` path appears (``a`` for ``a/b/c``) or the
  ``present`` path disappears. Then it is done.

codex uses inotify; this module polls (every 0.25 s, one thread per active watch), which is
cheap and portable.
"""

from __future__ import annotations

import itertools
import logging
import os
import posixpath
import threading
from collections.abc import Callable, Sequence

from execsdk._protocol.jsonrpc import encode_notification

__all__ = ["MissingWatcher"]

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.25
_ids = itertools.count(1)


def _first_missing(path: str) -> str | None:
    """The shallowest ancestor-or-self of ``path`` that does not exist (None if it exists)."""
    if os.path.lexists(path):
        return None
    parent = posixpath.dirname(path)
    missing = path
    while parent != missing and not os.path.lexists(parent):
        missing, parent = parent, posixpath.dirname(parent)
    return missing


class _Watch:
    def __init__(self, watch_id: int, targets: list[str], present: str | None) -> None:
        self.watch_id = watch_id
        self.targets = targets
        self.present = present
        self.stop = threading.Event()

    def changed(self) -> bool:
        if self.present is not None and not os.path.lexists(self.present):
            return True
        return any(os.path.lexists(t) for t in self.targets)


class MissingWatcher:
    """The ``fs/watchMissing`` state of one connection.

    ``emit`` receives each ``fs/missingChanged`` notification as UTF-8 JSON.
    Thread-safety: every method may be called from any thread.
    """

    def __init__(self, emit: Callable[[bytes], object], *, interval: float = POLL_INTERVAL) -> None:
        self._emit = emit
        self._interval = interval
        self._lock = threading.Lock()
        self._last_id: int | None = None
        self._current: _Watch | None = None
        self._closed = False

    def watch(
        self, watch_id: int, missing: Sequence[str | None], present: str | bool | None
    ) -> bool:
        """Start watching; returns the ``watching`` answer.

        ``missing`` holds absolute paths (None for a URI with a foreign host); ``present`` is a
        path, None when not given, or False for a foreign-host URI.
        """
        with self._lock:
            if self._closed or (self._last_id is not None and watch_id <= self._last_id):
                return False
            self._last_id = watch_id
            if self._current is not None:
                self._current.stop.set()
                self._current = None
            if not missing or present is False or any(p is None for p in missing):
                return False
            paths = [p for p in missing if p is not None]
            targets: list[str] = []
            for path in paths:
                first = _first_missing(path)
                if first is None:
                    return False
                targets.append(first)
            if isinstance(present, str) and not os.path.lexists(present):
                return False
            watch = _Watch(watch_id, targets, present if isinstance(present, str) else None)
            self._current = watch
        thread = threading.Thread(
            target=self._poll,
            args=(watch,),
            name=f"execsdk-serve-watch-{next(_ids)}",
            daemon=True,
        )
        thread.start()
        return True

    def _poll(self, watch: _Watch) -> None:
        while not watch.stop.wait(self._interval):
            try:
                fired = watch.changed()
            except OSError as exc:
                log.debug("fs/watchMissing %d: %s", watch.watch_id, exc)
                continue
            if not fired:
                continue
            with self._lock:
                if self._current is not watch or watch.stop.is_set():
                    return
                self._current = None
                watch.stop.set()
            self._emit(encode_notification("fs/missingChanged", {"watchId": watch.watch_id}))
            return

    def close(self) -> None:
        """Stop the active watch (connection closed). Idempotent."""
        with self._lock:
            self._closed = True
            if self._current is not None:
                self._current.stop.set()
                self._current = None
