"""URL routes of the example project."""

from __future__ import annotations

from django.urls import path  # type: ignore[import-untyped]

from remoterun import views

urlpatterns = [
    path("", views.index),
    path("run", views.run),
]
