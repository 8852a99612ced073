"""A minimal Django project that runs commands on an exec-server (settings configured in code).

    pip install django
    python examples/django_app/manage.py runserver 127.0.0.1:8000
        # then: curl -N 'http://127.0.0.1:8000/run?cmd=count'
    python examples/django_app/manage.py runremote -- ls -l /tmp

The server comes from ``$EXECSDK_URL``, else the embedded default server starts. The project is
the ``remoterun`` package next to this file: ``project.py`` (settings), ``urls.py``,
``views.py`` (a StreamingHttpResponse view), ``shared.py`` (the one environment the whole
process shares) and ``management/commands/runremote.py``.
"""

from __future__ import annotations

import sys

from remoterun.project import setup


def main() -> None:
    setup()
    from django.core.management import execute_from_command_line  # type: ignore[import-untyped]

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
