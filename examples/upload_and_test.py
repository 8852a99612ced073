"""Upload a small local project to the server and run its tests there.

The project (a module and its unittest file) is created in a local temporary directory, copied
into a fresh directory under the server's temp dir, tested with ``python3 -m unittest`` (the
server may not have pytest), and removed again. The exit code is the remote test run's::

    python examples/upload_and_test.py            # passes: exit code 0
    python examples/upload_and_test.py --broken   # ships a failing test: exit code 1

The server comes from ``$EXECSDK_URL``, else the embedded default server starts.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import secrets
import sys
import tempfile

import execsdk

MODULE = '''\
"""A tiny module to test remotely."""


def slugify(text: str) -> str:
    return "-".join(text.lower().split())
'''

TESTS = """\
import unittest

from slug import slugify


class SlugifyTest(unittest.TestCase):
    def test_spaces_become_dashes(self) -> None:
        self.assertEqual(slugify("Hello  Remote World"), "hello-remote-world")

    def test_empty(self) -> None:
        self.assertEqual(slugify(""), "")
"""

BROKEN_TEST = """
    def test_deliberately_wrong(self) -> None:
        self.assertEqual(slugify("A B"), "a_b")
"""


def make_project(root: str, *, broken: bool) -> None:
    """Write the project's files into the local directory ``root``."""
    with open(os.path.join(root, "slug.py"), "w", encoding="utf-8") as f:
        f.write(MODULE)
    with open(os.path.join(root, "test_slug.py"), "w", encoding="utf-8") as f:
        f.write(TESTS + (BROKEN_TEST if broken else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broken", action="store_true", help="include a failing test")
    args = parser.parse_args(argv)

    with execsdk.connect(timeout=30) as env, tempfile.TemporaryDirectory() as local_dir:
        make_project(local_dir, broken=args.broken)
        remote_dir = posixpath.join(env.info.temp_dir, f"execsdk-project-{secrets.token_hex(4)}")
        print(f"uploading {sorted(os.listdir(local_dir))} to {remote_dir}")
        env.fs.upload(local_dir, remote_dir)
        try:
            result = env.run(
                ["python3", "-m", "unittest", "-v"],
                cwd=remote_dir,
                env={"PYTHONDONTWRITEBYTECODE": "1"},
                text=True,
                timeout=120,
            )
        finally:
            env.fs.rmtree(remote_dir, missing_ok=True)
        # unittest reports on stderr.
        sys.stdout.write(result.stdout)
        sys.stdout.write(result.stderr)
        print(f"remote tests exited with {result.returncode}")
        return result.returncode


if __name__ == "__main__":
    sys.exit(main())
