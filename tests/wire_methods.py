"""The exec-server's request methods, written out once for the tests that need the whole list.

``tests/unit/test_protocol.py`` checks the package's method table against it, and the fuzz test
(``tests/reliability/test_reliability_fuzz.py``) draws its requests from it. Kept apart from
``execsdk._protocol.methods`` on purpose: a test that read the package's own table could not
catch a method missing from it.
"""

from __future__ import annotations

NOT_FUZZED = ("initialize", "http/request")
"""Left out of the fuzz test: the handshake (done once per connection) and outbound HTTP."""

REQUEST_METHODS: tuple[str, ...] = (
    "process/start",
    "process/read",
    "process/write",
    "process/signal",
    "process/terminate",
    "process/closeStdin",
    "process/keepOutput",
    "process/ackOutput",
    "fs/readFile",
    "fs/writeFile",
    "fs/createDirectory",
    "fs/getMetadata",
    "fs/readDirectory",
    "fs/remove",
    "fs/copy",
    "fs/canonicalize",
    "fs/walk",
    "fs/open",
    "fs/readBlock",
    "fs/writeBlock",
    "fs/close",
    "fs/setMode",
    "fs/stat",
    "environment/info",
    "environment/status",
    "environmentConfig/read",
    "fs/watchMissing",
    *NOT_FUZZED,
)
"""Every request method (the ``initialized`` notification is not one)."""
