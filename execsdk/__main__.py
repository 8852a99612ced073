"""``python -m execsdk``: the command line (see :mod:`execsdk.cli`)."""

from __future__ import annotations

from execsdk.cli import main

raise SystemExit(main())
