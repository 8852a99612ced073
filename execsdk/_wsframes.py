"""The two pieces of RFC 6455 framing both ends write by hand: frame headers and the XOR mask.

The client (``_transport/websocket.py``) frames and masks what it sends; our server
(``server/wsconn.py``) frames what it sends unmasked and unmasks small frames it receives. The
rest of the framing each end reads differently (the client from a socket buffer, the server
beside websockets' protocol object). Stdlib only; pure functions, safe from any thread.
"""

from __future__ import annotations

import struct

__all__ = ["frame_header", "xor_mask"]

_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


def frame_header(first: int, length: int, *, masked: bool) -> bytes:
    """The header of a frame whose first byte is ``first`` (FIN, RSV bits, opcode) and whose
    payload has ``length`` bytes; the masking key, when ``masked``, follows it (§5.2).

    Lengths below 126 fit the second byte, below 65536 a 16-bit extension, else a 64-bit one.
    """
    mask_bit = 0x80 if masked else 0
    if length < 126:
        return bytes((first, mask_bit | length))
    if length < 65536:
        return _HEADER_16.pack(first, mask_bit | 126, length)
    return _HEADER_64.pack(first, mask_bit | 127, length)


def xor_mask(key: bytes, data: bytes | memoryview) -> bytes:
    """``data`` XOR the 4-byte ``key`` repeated (§5.3); masking and unmasking are the same.

    One big-integer XOR: quick for small payloads; past ~16 KiB the integers fall out of the
    CPU cache, so larger ones are cut into pieces (or masked in C) by the caller.
    """
    n = len(data)
    words, extra = divmod(n, 4)
    pattern = int.from_bytes(key * words + key[:extra], "little")
    return (int.from_bytes(data, "little") ^ pattern).to_bytes(n, "little")
