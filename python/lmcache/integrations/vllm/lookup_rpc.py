"""Lookup RPC between vLLM's scheduler process and its worker processes.

vLLM runs the scheduler-side connector in the engine-core process and the
worker-side connector (which owns the KV tensors and so lmcache's host tier)
in each worker process. The scheduler asks every TP rank how many leading
tokens of a prompt it holds and takes the minimum.

Who may connect: only processes of the engine's own user, three times over.
  * The socket is a file (mode 0600) in a private directory (mode 0700, owned
    by this euid) whose name both sides derive from vLLM's engine id and the
    euid, under $XDG_RUNTIME_DIR when that is ours, else the temp dir. A
    directory of that name that is not ours or not 0700 is refused.
  * The server reads the peer's credentials (SO_PEERCRED) and closes a
    connection from any other uid at once.
  * Each server writes a random secret to a 0600 file beside its socket; the
    first frame of a connection must carry it, or nothing (clearing included)
    is answered. The client, in turn, checks the directory and that the server
    runs as its own uid before it sends a prompt.

Frames are defined in lookup_frames.py. Bounds: a header is checked before
its body is read (a bad length allocates nothing), bodies are read in 64 KiB
pieces, a frame must arrive within the server's idle timeout (so must the
next one), and past max_connections a new connection is closed at once. A malformed frame closes its connection and is
counted; the server keeps serving the others.

On the client, any failure (no server, timeout, bad reply) is a miss for that
lookup, never a hang: a broken connection is dropped and reopened next call.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import stat
import struct
import tempfile
import threading
import time
from typing import Callable, Optional, Sequence

import numpy as np

from lmcache.integrations.vllm.lookup_frames import (
    _HEADER,
    MAX_TOKENS,
    OP_CLEAR,
    OP_HELLO,
    OP_LOOKUP,
    OP_SEGMENT,
    OP_STATS,
    REQ_ID_BYTES,
    SECRET_BYTES,
    AuthError,
    FrameError,
    PeerClosed,
    Request,
    read_request,
)
from lmcache.peer_creds import peer_uid

logger = logging.getLogger(__name__)

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_MAX_STATS_REPLY = 64 << 20
_RECV_PIECE = 64 << 10
_UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the trailing NUL
COUNTERS = ("refused_peers", "refused_over_cap", "auth_failures", "malformed_frames", "idle_timeouts")


# ---------------------------------------------------------------- paths and credentials
def lookup_dir(engine_id: str) -> str:
    """The engine's private directory: the scheduler, the workers and tools of
    the same user all derive the same path from the engine id."""
    euid = os.geteuid()
    digest = hashlib.sha256(engine_id.encode()).hexdigest()[:24]  # any engine id, a short safe name
    return os.path.join(_base_dir(euid), f"lmcache-lookup-{euid}-{digest}")


def _base_dir(euid: int) -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        try:
            st = os.stat(runtime)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == euid and not st.st_mode & 0o022:
                return runtime
        except OSError:
            pass
    return tempfile.gettempdir()


def socket_name(engine_id: str, rank: int) -> str:
    return os.path.join(lookup_dir(engine_id), f"rank-{rank}.sock")


def _secret_path(sock_path: str) -> str:
    return os.path.splitext(sock_path)[0] + ".key"


def check_private_dir(path: str) -> None:
    """Raises PermissionError unless path is a real directory of this euid with mode 0700."""
    st = os.lstat(path)
    euid = os.geteuid()
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != euid or mode != 0o700:
        raise PermissionError(f"lmcache refuses {path}: it must be a directory of uid {euid} with mode 0700 "
                              f"(found uid {st.st_uid}, mode {oct(mode)}, directory: {stat.S_ISDIR(st.st_mode)})")


def _make_private_dir(path: str) -> None:
    try:
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)  # the umask may have taken bits away
    except FileExistsError:
        pass  # another rank made it, or an earlier run: checked below like any other
    check_private_dir(path)


def _write_secret(path: str, secret: bytes) -> None:
    """Written whole under a temporary name, then renamed: a reader never sees half a secret."""
    tmp = f"{path}.{os.getpid()}.tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)  # left by a dead process of the same pid
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, secret)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _read_secret(sock_path: str) -> bytes:
    fd = os.open(_secret_path(sock_path), os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            raise PermissionError(f"{_secret_path(sock_path)} is not this user's")
        secret = os.read(fd, SECRET_BYTES + 1)
    finally:
        os.close(fd)
    if len(secret) != SECRET_BYTES:
        raise ConnectionError(f"{_secret_path(sock_path)} does not hold a secret")
    return secret


def _recv_exact(sock: socket.socket, n: int, deadline: Optional[float] = None, limit: int = 1 << 62) -> bytes:
    """n bytes, read in 64 KiB pieces so memory grows only with what arrived;
    with a deadline, the whole read must be done by then (socket.timeout)."""
    if n > limit:
        raise ConnectionError(f"a reply of {n} bytes is past the limit of {limit}")
    pieces, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("the frame did not arrive in time")
            sock.settimeout(left)
        piece = sock.recv(min(n - got, _RECV_PIECE))
        if not piece:
            raise PeerClosed("peer closed the connection")
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)


# ---------------------------------------------------------------- server
class LookupServer:
    """Answers one worker's lookups: an accept thread and one thread per
    connection, at most max_connections of them (the native lookup releases
    the GIL). Idle or slow peers are dropped after idle_timeout_s."""

    def __init__(self, path: str, lookup: Callable[[np.ndarray, str], int], stats: Callable[[], dict],
                 clear: Optional[Callable[[bool], int]] = None, *, max_connections: int = 8,
                 idle_timeout_s: float = 60.0, max_tokens: int = MAX_TOKENS,
                 segment_lookup: Optional[Callable[[np.ndarray], int]] = None) -> None:
        if not os.path.isabs(path) or len(os.fsencode(path)) > _UNIX_PATH_MAX:
            raise ValueError(f"the lookup socket needs an absolute path of at most {_UNIX_PATH_MAX} bytes: {path!r}")
        self._lookup, self._stats, self._clear = lookup, stats, clear
        self._segment_lookup = segment_lookup  # None: this worker does not blend, every segment misses
        self._path, self._secret_file = path, _secret_path(path)
        self._max_connections, self._idle_timeout, self._max_tokens = max_connections, idle_timeout_s, max_tokens
        self._euid = os.geteuid()
        self._secret = secrets.token_bytes(SECRET_BYTES)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._closed = False
        _make_private_dir(os.path.dirname(path))
        self._sock = _bind_fresh(path)
        # Bound but not listening: a client can connect only once the new secret is in place.
        _write_secret(self._secret_file, self._secret)
        self._inodes = {p: os.lstat(p).st_ino for p in (path, self._secret_file)}
        self._sock.listen(16)
        self._thread = threading.Thread(target=self._accept_loop, name="lmcache-lookup", daemon=True)
        self._thread.start()

    def stats(self) -> dict:
        with self._lock:
            return {f"lookup_rpc_{k}": v for k, v in self.counters.items()}

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._conns)

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            if self._admit(conn):
                threading.Thread(target=self._serve, args=(conn,), name="lmcache-lookup-conn", daemon=True).start()
            else:
                conn.close()

    def _admit(self, conn: socket.socket) -> bool:
        try:
            uid = peer_uid(conn)
        except OSError:
            uid = -1
        if uid != self._euid:
            self._count("refused_peers")
            return False
        with self._lock:
            if self._closed:
                return False
            if len(self._conns) >= self._max_connections:
                self.counters["refused_over_cap"] += 1
                return False
            self._conns.add(conn)
        return True

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._serve_connection(conn)
        except AuthError:
            self._count("auth_failures")
        except FrameError as e:
            self._count("malformed_frames")
            logger.warning("lmcache lookup server: %s; closing that connection", e)
        except socket.timeout:
            self._count("idle_timeouts")
        except OSError:
            pass  # the peer went away (PeerClosed is one)
        except Exception as e:  # a stats or clear callback failed: that client gets a closed connection
            logger.warning("lmcache lookup server: %s", e)
        finally:  # counted, closed, then let go of: a peer that sees the close sees the count
            conn.close()
            with self._lock:
                self._conns.discard(conn)

    def _serve_connection(self, conn: socket.socket) -> None:
        hello = self._next_request(conn, first=True)
        if hello is None:
            return
        if not hmac.compare_digest(hello.body, self._secret):
            raise AuthError("wrong secret")
        while (request := self._next_request(conn, first=False)) is not None:
            reply = self._answer(request)
            conn.settimeout(self._idle_timeout)  # a peer that does not read its reply is dropped too
            conn.sendall(reply)

    def _next_request(self, conn: socket.socket, first: bool) -> Optional[Request]:
        """The next whole frame, or None if the peer closed between frames.
        The peer may be idle up to idle_timeout_s, then has as long again to
        send the whole frame."""
        conn.settimeout(self._idle_timeout)
        if not conn.recv(1, socket.MSG_PEEK):
            return None
        deadline = time.monotonic() + self._idle_timeout
        return read_request(lambda k: _recv_exact(conn, k, deadline), first, self._max_tokens)

    def _answer(self, request: Request) -> bytes:
        if request.op in (OP_LOOKUP, OP_SEGMENT):
            try:
                if request.op == OP_LOOKUP:
                    hit = self._lookup(request.tokens(), request.req_id())
                else:
                    hit = self._segment_lookup(request.tokens()) if self._segment_lookup else 0
            except Exception as e:  # a lookup error is a miss, reported once per call
                logger.warning("lmcache lookup failed: %s", e)
                hit = 0
            return _U64.pack(hit)
        if request.op == OP_STATS:
            body = json.dumps(self._stats()).encode()
            return _U32.pack(len(body)) + body
        removed = self._clear(request.n == 1) if self._clear else 0  # OP_CLEAR, the only op left
        return _U64.pack(removed)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = list(self._conns)
        for s in [self._sock, *conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._sock.close()
        self._thread.join(timeout=5)
        self._remove_files()

    def _remove_files(self) -> None:
        # Only our own files: a newer server on the same path may have replaced them.
        for path, ino in self._inodes.items():
            try:
                if os.lstat(path).st_ino == ino:
                    os.unlink(path)
            except OSError:
                pass
        try:
            os.rmdir(os.path.dirname(self._path))  # fails while another rank's socket is there
        except OSError:
            pass


def _bind_fresh(path: str) -> socket.socket:
    if os.path.lexists(path):
        if _is_live(path):
            raise OSError(errno.EADDRINUSE, f"a lookup server already serves {path}")
        os.unlink(path)  # left by a process that died without closing
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o600)
    except BaseException:
        sock.close()
        raise
    return sock


def _is_live(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(path)
            return True
        except OSError:
            return False


# ---------------------------------------------------------------- client
def open_connection(path: str, timeout_s: float) -> socket.socket:
    """A connection to the lookup server at path, its secret already sent.
    Raises OSError (PermissionError when something is not this user's)."""
    check_private_dir(os.path.dirname(path))
    secret = _read_secret(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout_s)
        s.connect(path)
        if peer_uid(s) != os.geteuid():  # never send a prompt to another user's process
            raise PermissionError(f"the lookup server at {path} runs as another user")
        s.sendall(_HEADER.pack(OP_HELLO, SECRET_BYTES) + secret)
        return s
    except BaseException:
        s.close()
        raise


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when the server has closed this idle connection (it drops idle
    peers) or left bytes nobody asked for: either way, start afresh."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)


class LookupClient:
    """Used by the scheduler: min over the ranks' hits; 0 on any failure."""

    def __init__(self, engine_id: str, ranks: Sequence[int], timeout_s: float, max_tokens: int = MAX_TOKENS) -> None:
        self._paths = [socket_name(engine_id, r) for r in ranks]
        self._timeout = timeout_s
        self._max_tokens = max_tokens
        self._socks: list[Optional[socket.socket]] = [None] * len(self._paths)
        self.errors = 0

    def lookup(self, token_ids: Sequence[int], req_id: str = "") -> int:
        """Leading tokens of a prompt cached (whole chunks), the smallest over the ranks."""
        return self._ask(OP_LOOKUP, token_ids, req_id)

    def lookup_segment(self, token_ids: Sequence[int]) -> int:
        """Leading tokens of one segment cached as a segment (blending)."""
        return self._ask(OP_SEGMENT, token_ids, "")

    def _ask(self, op: bytes, token_ids: Sequence[int], req_id: str) -> int:
        tokens = np.asarray(token_ids, dtype="<u4")[: self._max_tokens]
        rid = req_id.encode()
        rid = rid.ljust(REQ_ID_BYTES, b"\0") if len(rid) <= REQ_ID_BYTES and b"\0" not in rid else bytes(REQ_ID_BYTES)
        frame = _HEADER.pack(op, len(tokens)) + rid + tokens.tobytes()
        hit = None
        for i in range(len(self._paths)):
            try:
                sock = self._connect(i)
                sock.sendall(frame)
                (rank_hit,) = _U64.unpack(_recv_exact(sock, _U64.size))
            except (OSError, struct.error) as e:
                self._drop(i)
                self.errors += 1
                logger.warning("lmcache lookup on %s failed (%s); treating it as a miss", self._paths[i], e)
                return 0
            hit = rank_hit if hit is None else min(hit, rank_hit)
        return hit or 0

    def _connect(self, i: int) -> socket.socket:
        if self._socks[i] is not None and _closed_by_peer(self._socks[i]):
            self._drop(i)
        if self._socks[i] is None:
            self._socks[i] = open_connection(self._paths[i], self._timeout)
        return self._socks[i]

    def _drop(self, i: int) -> None:
        if self._socks[i] is not None:
            self._socks[i].close()
            self._socks[i] = None

    def close(self) -> None:
        for i in range(len(self._socks)):
            self._drop(i)


def clear_worker_cache(engine_id: str, rank: int = 0, *, include_disk: bool = False, timeout_s: float = 30.0) -> int:
    """Drops a vLLM worker's cached chunks (host tier only, or every tier); returns how many.
    Only a process of the engine's own user can do it."""
    with open_connection(socket_name(engine_id, rank), timeout_s) as s:
        s.sendall(_HEADER.pack(OP_CLEAR, 1 if include_disk else 0))
        return _U64.unpack(_recv_exact(s, _U64.size))[0]


def query_worker_stats(engine_id: str, rank: int = 0, timeout_s: float = 5.0) -> dict:
    """The lmcache stats of one vLLM worker (for tools and tests, from any process of the engine's user)."""
    with open_connection(socket_name(engine_id, rank), timeout_s) as s:
        s.sendall(_HEADER.pack(OP_STATS, 0))
        (n,) = _U32.unpack(_recv_exact(s, _U32.size))
        return json.loads(_recv_exact(s, n, limit=_MAX_STATS_REPLY))
