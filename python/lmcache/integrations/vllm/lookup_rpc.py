"""Lookup RPC between vLLM's scheduler process and its worker processes.

vLLM runs the scheduler-side connector in the engine-core process and the
worker-side connector (which owns the KV tensors and so lmcache's host tier)
in each worker process. The scheduler asks every TP rank how many leading
tokens of a prompt it holds and takes the minimum.

Transport: a Unix socket in the abstract namespace (nothing on disk to clean
up), named after vLLM's engine id and the rank. Frames are little-endian:

    request  = op (1 byte) | n (u32) | n token ids (u32 each)
    reply L  = hit tokens (u64)
    reply S  = length (u32) | JSON stats
    op C     = clear the host tier (n = 0) or every tier (n = 1); reply u64 removed

Any failure (no server, timeout, bad reply) is a miss for that lookup, never a
hang: sockets have timeouts and a broken connection is dropped and retried on
the next call.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
from typing import Callable, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

OP_LOOKUP = b"L"
OP_STATS = b"S"
OP_CLEAR = b"C"
_HEADER = struct.Struct("<cI")
_MAX_TOKENS = 1 << 26


def socket_name(engine_id: str, rank: int) -> str:
    # Leading NUL: Linux abstract namespace.
    return f"\0lmcache-lookup-{engine_id}-{rank}"


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        r = sock.recv_into(view[got:], n - got)
        if r == 0:
            raise ConnectionError("peer closed the connection")
        got += r
    return bytes(buf)


class LookupServer:
    """Answers lookups for one worker from a daemon thread (the native lookup releases the GIL)."""

    def __init__(self, name: str, lookup: Callable[[np.ndarray], int], stats: Callable[[], dict],
                 clear: Optional[Callable[[bool], int]] = None) -> None:
        self._lookup, self._stats, self._clear = lookup, stats, clear
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(name)
        self._sock.listen(16)
        self._closed = False
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name="lmcache-lookup", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            with self._conns_lock:
                if self._closed:
                    conn.close()
                    return
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="lmcache-lookup-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._serve_loop(conn)
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            conn.close()

    def _serve_loop(self, conn: socket.socket) -> None:
        while True:
            try:
                op, n = _HEADER.unpack(_recv_exact(conn, _HEADER.size))
                if op == OP_CLEAR:
                    removed = self._clear(n == 1) if self._clear else 0
                    conn.sendall(struct.pack("<Q", removed))
                    continue
                if n > _MAX_TOKENS:
                    return
                tokens = np.frombuffer(_recv_exact(conn, 4 * n), dtype="<u4") if n else np.empty(0, "<u4")
                if op == OP_LOOKUP:
                    try:
                        hit = self._lookup(tokens)
                    except Exception as e:  # a lookup error is a miss, reported once per call
                        logger.warning("lmcache lookup failed: %s", e)
                        hit = 0
                    conn.sendall(struct.pack("<Q", hit))
                elif op == OP_STATS:
                    body = json.dumps(self._stats()).encode()
                    conn.sendall(struct.pack("<I", len(body)) + body)
                else:
                    return
            except (ConnectionError, OSError, struct.error):
                return

    def close(self) -> None:
        self._closed = True
        for s in [self._sock, *self._snapshot_conns()]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._sock.close()

    def _snapshot_conns(self) -> list[socket.socket]:
        with self._conns_lock:
            return list(self._conns)


class LookupClient:
    """Used by the scheduler: min over the ranks' hits; 0 on any failure."""

    def __init__(self, engine_id: str, ranks: Sequence[int], timeout_s: float) -> None:
        self._names = [socket_name(engine_id, r) for r in ranks]
        self._timeout = timeout_s
        self._socks: list[Optional[socket.socket]] = [None] * len(self._names)
        self.errors = 0

    def lookup(self, token_ids: Sequence[int]) -> int:
        tokens = np.asarray(token_ids, dtype="<u4")
        frame = _HEADER.pack(OP_LOOKUP, len(tokens)) + tokens.tobytes()
        hit = None
        for i in range(len(self._names)):
            try:
                sock = self._connect(i)
                sock.sendall(frame)
                (rank_hit,) = struct.unpack("<Q", _recv_exact(sock, 8))
            except (OSError, ConnectionError, struct.error) as e:
                self._drop(i)
                self.errors += 1
                logger.warning("lmcache lookup on %s failed (%s); treating it as a miss", self._names[i][1:], e)
                return 0
            hit = rank_hit if hit is None else min(hit, rank_hit)
        return hit or 0

    def _connect(self, i: int) -> socket.socket:
        if self._socks[i] is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self._timeout)
            s.connect(self._names[i])
            self._socks[i] = s
        return self._socks[i]

    def _drop(self, i: int) -> None:
        if self._socks[i] is not None:
            self._socks[i].close()
            self._socks[i] = None

    def close(self) -> None:
        for i in range(len(self._socks)):
            self._drop(i)


def clear_worker_cache(engine_id: str, rank: int = 0, *, include_disk: bool = False, timeout_s: float = 30.0) -> int:
    """Drops a vLLM worker's cached chunks (host tier only, or every tier); returns how many."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(socket_name(engine_id, rank))
        s.sendall(_HEADER.pack(OP_CLEAR, 1 if include_disk else 0))
        return struct.unpack("<Q", _recv_exact(s, 8))[0]


def query_worker_stats(engine_id: str, rank: int = 0, timeout_s: float = 5.0) -> dict:
    """The lmcache stats of one vLLM worker (for tools and tests, from any process)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(socket_name(engine_id, rank))
        s.sendall(_HEADER.pack(OP_STATS, 0))
        (n,) = struct.unpack("<I", _recv_exact(s, 4))
        return json.loads(_recv_exact(s, n))
