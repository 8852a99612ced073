"""The I/O-thread registry (_threads.py): the RPC reader is known by reference, not by name."""

from __future__ import annotations

import threading
from collections.abc import Callable

from execsdk._rpc.endpoint import RpcClient
from execsdk._threads import io_thread_role, is_io_thread, mark_io_thread
from execsdk._transport.memory import memory_pair


def _in_thread(target: Callable[[], object], name: str = "worker") -> None:
    t = threading.Thread(target=target, name=name)
    t.start()
    t.join(5)
    assert not t.is_alive()


def test_a_marked_thread_is_an_io_thread_and_no_other_is() -> None:
    seen: list[tuple[bool, str | None]] = []

    def marked() -> None:
        mark_io_thread("test loop")
        seen.append((is_io_thread(), io_thread_role()))

    _in_thread(marked)
    _in_thread(lambda: seen.append((is_io_thread(), io_thread_role())))
    assert seen == [(True, "test loop"), (False, None)]
    assert not is_io_thread()  # the mark stayed with the thread that made it


def test_a_thread_named_like_the_reader_is_not_taken_for_it() -> None:
    seen: list[bool] = []
    _in_thread(lambda: seen.append(is_io_thread()), name="execsdk-reader-99")
    assert seen == [False]


def test_the_rpc_reader_marks_itself() -> None:
    client_end, server_end = memory_pair()
    rpc = RpcClient(client_end, timeout=5.0)
    seen: list[str | None] = []
    done = threading.Event()

    def handler(params: dict[str, object]) -> None:  # internal handlers run on the reader
        seen.append(io_thread_role())
        done.set()

    rpc.bus.add_handler("test/ping", handler)
    server_end.send('{"method": "test/ping", "params": {}}')
    assert done.wait(5)
    assert seen == ["RPC reader"]
    assert io_thread_role() is None
    rpc.close()
