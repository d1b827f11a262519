"""The node server's wire format, over a Unix stream socket.

Every message, both ways, is one frame:

    op (1 byte) | header length (4 bytes, big-endian) | body length (4 bytes) | header | body

The header is a small JSON object; the body is raw chunk keys (16 bytes
each). Replies use op OK or ERROR (header {"error": "..."}). The pool's
memory file travels once per attach as SCM_RIGHTS ancillary data of the
SHAPE reply. Sizes are bounded before anything is read.
"""

from __future__ import annotations

import array
import json
import socket
import struct
from typing import Any, Optional

VERSION = 1
_FRAME = struct.Struct("!BII")
MAX_HEADER = 64 << 10
MAX_BODY = 16 * (1 << 20)  # a million chunk keys

# Requests.
HELLO, SHAPE, LOOKUP, HOLD, RELEASE, RESERVE, COMMIT, ABORT = range(1, 9)
PIN, UNPIN, CLEAR, STATS, LOCATE, PREFETCH, EVICT, FLUSH = range(9, 17)
# Replies.
OK, ERROR = 100, 101


class ProtocolError(Exception):
    """A malformed frame, or the peer went away."""


def send(sock: socket.socket, op: int, header: dict, body: bytes = b"", fds: Optional[list[int]] = None) -> None:
    head = json.dumps(header, separators=(",", ":")).encode()
    data = _FRAME.pack(op, len(head), len(body)) + head + body
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendall(data)


def recv(sock: socket.socket, want_fds: int = 0) -> tuple[int, dict, bytes, list[int]]:
    """One frame: (op, header, body, received fds). Raises ProtocolError."""
    fds: list[int] = []
    first = _recv_exact(sock, _FRAME.size, fds if want_fds else None, want_fds)
    op, head_len, body_len = _FRAME.unpack(first)
    if head_len > MAX_HEADER or body_len > MAX_BODY:
        _close_all(fds)
        raise ProtocolError(f"frame too large ({head_len} + {body_len} bytes)")
    try:
        header = json.loads(_recv_exact(sock, head_len)) if head_len else {}
    except (ValueError, UnicodeDecodeError):
        _close_all(fds)
        raise ProtocolError("malformed frame header") from None
    if not isinstance(header, dict):
        _close_all(fds)
        raise ProtocolError("malformed frame header")
    body = _recv_exact(sock, body_len) if body_len else b""
    return op, header, body, fds


def _recv_exact(sock: socket.socket, n: int, fds: Optional[list[int]] = None, want_fds: int = 0) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if fds is not None and not fds:
            data, anc, _, _ = sock.recvmsg(n - len(buf), socket.CMSG_SPACE(want_fds * 4))
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    got = array.array("i")
                    got.frombytes(payload[: len(payload) - len(payload) % 4])
                    fds.extend(got)
        else:
            data = sock.recv(n - len(buf))
        if not data:
            raise ProtocolError("the peer closed the connection")
        buf += data
    return bytes(buf)


def _close_all(fds: list[int]) -> None:
    import os

    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def int_list(header: dict, key: str) -> list[int]:
    value = header.get(key)
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ProtocolError(f"field {key!r} must be a list of integers")
    return value


def field(header: dict, key: str, kind: type, default: Any = None) -> Any:
    value = header.get(key, default)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ProtocolError(f"field {key!r} must be {kind.__name__}")
    return value
