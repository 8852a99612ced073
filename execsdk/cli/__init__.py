"""The ``execsdk`` command line (``execsdk ...`` or ``python -m execsdk ...``)."""

from __future__ import annotations

from execsdk.cli.main import main

__all__ = ["main"]
