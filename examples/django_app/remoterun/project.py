"""Django settings, configured in code instead of a settings module.

No database, no sessions, no templates: the app needs none of them.
"""

from __future__ import annotations

import os
import secrets

import django  # type: ignore[import-untyped]
from django.conf import settings  # type: ignore[import-untyped]


def setup() -> None:
    """Configure Django for this project and load its app (once per process)."""
    if settings.configured:
        return
    settings.configure(
        DEBUG=os.environ.get("DJANGO_DEBUG") == "1",
        # Nothing here is signed or stored, so a per-process key is enough for the example.
        SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(32),
        ALLOWED_HOSTS=["127.0.0.1", "localhost", "testserver"],
        ROOT_URLCONF="remoterun.urls",
        INSTALLED_APPS=["remoterun"],
        MIDDLEWARE=[],
        DATABASES={},
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    django.setup()
