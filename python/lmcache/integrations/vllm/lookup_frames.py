"""Frames of the lookup RPC (lookup_rpc.py), parsed without any socket:
pure functions, so that a fuzzer can drive them.

Frames are little-endian:

    request  = op (1 byte) | n (u32) | body
      op H   n = 32, body = the secret; the first frame, and only there
      op L   body = request id (64 bytes, NUL-padded) | n token ids (u32 each),
             n <= max_tokens; reply u64 hit tokens. The id lets the worker
             keep the request's keys for its load and store.
      op G   the same as L for one segment of a prompt (blending): looked up
             among cached segments, not prefixes; reply u64 hit tokens
      op S   n = 0; reply length (u32) | JSON stats
      op C   n = 0 clears the host tier, n = 1 every tier; reply u64 chunks removed
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

import numpy as np

OP_HELLO = b"H"
OP_LOOKUP = b"L"
OP_SEGMENT = b"G"
OP_STATS = b"S"
OP_CLEAR = b"C"
_WITH_TOKENS = (OP_LOOKUP, OP_SEGMENT)
_HEADER = struct.Struct("<cI")
SECRET_BYTES = 32
REQ_ID_BYTES = 64  # longer request ids are sent as "" (the worker then keeps no keys for them)
# 16 MiB of token ids. Hits are prefixes, so a longer prompt is looked up by
# its first MAX_TOKENS tokens: a smaller hit at worst, never a wrong one.
MAX_TOKENS = 1 << 22


class FrameError(ValueError):
    """A malformed request: the server closes the connection and counts it."""


class AuthError(FrameError):
    """A connection whose first frame is not the server's secret."""


class PeerClosed(ConnectionError):
    """The connection (or the input) ended before a whole frame arrived."""


@dataclass(frozen=True)
class Request:
    op: bytes
    n: int
    body: bytes = b""

    def tokens(self) -> np.ndarray:
        return np.frombuffer(self.body, dtype="<u4", offset=REQ_ID_BYTES if self.op in _WITH_TOKENS else 0)

    def req_id(self) -> str:
        """A lookup's request id ("" when none was sent or it is not text)."""
        try:
            return self.body[:REQ_ID_BYTES].rstrip(b"\0").decode()
        except UnicodeDecodeError:
            return ""


def read_request(read: Callable[[int], bytes], first: bool, max_tokens: int = MAX_TOKENS) -> Request:
    """Parses one request frame. read(k) returns exactly k bytes or raises
    PeerClosed. The header is checked before the body is read, so a bad
    length costs nothing. Raises FrameError (AuthError for a first frame that
    is not a hello) on anything malformed."""
    op, n = _HEADER.unpack(read(_HEADER.size))
    if first and op != OP_HELLO:
        raise AuthError(f"the first frame must carry the secret, not op {op!r}")
    body_len = _body_length(op, n, first, max_tokens)
    return Request(op, n, read(body_len) if body_len else b"")


def _body_length(op: bytes, n: int, first: bool, max_tokens: int) -> int:
    if op == OP_HELLO and first and n == SECRET_BYTES:
        return n
    if op in _WITH_TOKENS and n <= max_tokens:
        return REQ_ID_BYTES + 4 * n
    if (op == OP_STATS and n == 0) or (op == OP_CLEAR and n in (0, 1)):
        return 0
    raise FrameError(f"bad request header: op {op!r}, n {n}")
