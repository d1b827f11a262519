"""`lmcache server`: the node's cache, served to every engine on the node.

Owns one pool per KV shape (a CacheEngine whose host tier is a shared memory
file, with its own disk directory and the remote tier); engines attach over
a Unix socket, receive the pool's memory file, and copy records themselves.
The server keeps the index and the references:

- a load holds its chunks (a lease) until the engine releases them, the
  lease times out, or the engine's connection closes (an engine killed with
  -9 included): leased chunks are never evicted, and nothing leaks;
- a store reserves slabs; the engine writes the records and commits them,
  and each record is checked (header, key, checksum) before anyone can read
  it; reservations of an engine that goes away are given back.

Only processes of the server's own user (and of `server_allowed_uids`) are
answered, checked with SO_PEERCRED on every connection; the socket lives in
a directory of the server's user.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import socket
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from lmcache import _core
from lmcache.config import Config
from lmcache.engine import CacheEngine
from lmcache.errors import ConfigError, LMCacheError
from lmcache.peer_creds import peer_creds
from lmcache.server import protocol as P

logger = logging.getLogger(__name__)

Shape = tuple  # (num_layers, num_planes, num_heads, head_dim, dtype, opaque_block_size)
# Every pool takes l1_capacity_gb of memory: a handful of models (and their
# tensor-parallel shapes) per server, not one per request an engine makes up.
MAX_POOLS = 8


class Pool:
    """The cache of one KV shape: a CacheEngine on a shared host pool."""

    def __init__(self, pool_id: int, config: Config, shape: Shape) -> None:
        disk = config.local_disk_path
        if disk:
            # Each shape keeps a directory (and so a disk lock) of its own.
            disk = os.path.join(disk, "shape-" + "-".join(str(part) for part in shape))
        self.id, self.shape = pool_id, shape
        self.engine = CacheEngine(config.replace(l1_shared_memory=True, local_disk_path=disk, server_socket=""),
                                  name=f"pool-{pool_id}")
        self.runtime = self.engine._runtime
        layers, planes, heads, head_dim, dtype, opaque = shape
        try:
            self.runtime.set_shape(layers, planes, heads, head_dim, dtype, opaque)
            self.fd, self.region_bytes, self.slab_bytes = self.runtime.shared_pool()
        except BaseException:
            self.engine.close()  # a shape it cannot hold leaves nothing behind
            raise


@dataclass(eq=False)  # compared and hashed by identity (kept in a set)
class _Session:
    """One attached engine: its leases and reservations, given back when it goes."""

    conn: socket.socket
    uid: int
    pid: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    leases: dict = field(default_factory=dict)  # id -> (pool, keys, deadline)
    writes: dict = field(default_factory=dict)  # id -> (pool, keys, slabs, deadline)


class NodeServer:
    def __init__(self, config: Config, socket_path: str) -> None:
        self.config = config
        self.path = os.path.abspath(socket_path)
        self.lease_timeout_s = config.server.server_lease_timeout_s
        self.allowed_uids = {os.geteuid(), *config.server.allowed_uids()}
        self.server_id = secrets.token_hex(8)  # a restarted server is another server
        self._pools: dict[Shape, Pool] = {}
        self._pools_lock = threading.Lock()
        self._sessions: set[_Session] = set()
        self._sessions_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self.stats = {"attaches": 0, "refused_peers": 0, "protocol_errors": 0, "leases": 0, "leases_expired": 0,
                      "leases_reclaimed": 0, "writes_reclaimed": 0}
        self._listener = self._listen()
        self._threads = [threading.Thread(target=self._accept_loop, name="lmcache-server-accept", daemon=True),
                         threading.Thread(target=self._reap_loop, name="lmcache-server-reaper", daemon=True)]
        for t in self._threads:
            t.start()
        logger.info("lmcache server: serving %s (pid %d, uids %s)", self.path, os.getpid(),
                    ",".join(map(str, sorted(self.allowed_uids))))

    # ------------------------------------------------------------ lifecycle
    def _listen(self) -> socket.socket:
        directory = os.path.dirname(self.path)
        shared = len(self.allowed_uids) > 1
        # Other users reach the socket only when allowed (their uid is still checked on connect).
        mode = 0o711 if shared else 0o700
        try:
            os.mkdir(directory, mode)
            os.chmod(directory, mode)  # the umask may have taken bits away
        except FileExistsError:
            pass  # an existing directory is used as it is, never re-permissioned: checked below
        except OSError as e:
            raise ConfigError(f"config key 'server_socket': cannot make {directory!r}: {e.strerror}") from None
        st = os.lstat(directory)
        too_open = stat.S_IMODE(st.st_mode) & (0o022 if shared else 0o077)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or too_open:
            raise ConfigError(f"config key 'server_socket': {directory!r} must be a directory of this user with "
                              f"mode {oct(mode)[2:]} (it holds the socket every engine trusts)")
        if os.path.lexists(self.path):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(self.path)
                    raise ConfigError(f"config key 'server_socket': a server already serves {self.path}")
                except OSError:
                    os.unlink(self.path)  # left by a server that died
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        os.chmod(self.path, 0o666 if shared else 0o600)
        sock.listen(64)
        return sock

    def wait(self) -> None:
        self._stop.wait()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
        with self._sessions_lock:
            sessions = list(self._sessions)
        for s in sessions:
            try:
                s.conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._pools_lock:
            pools = list(self._pools.values())
        for pool in pools:
            pool.engine.close()  # queued disk writes finish first

    # ------------------------------------------------------------ connections
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            creds = _peer_creds(conn)
            if creds is None or creds[1] not in self.allowed_uids:
                self.stats["refused_peers"] += 1
                logger.warning("lmcache server: refused a connection from uid %s", creds[1] if creds else "?")
                conn.close()
                continue
            session = _Session(conn, uid=creds[1], pid=creds[0])
            with self._sessions_lock:
                self._sessions.add(session)
            threading.Thread(target=self._serve, args=(session,), name="lmcache-server-conn", daemon=True).start()

    def _serve(self, s: _Session) -> None:
        try:
            while not self._stop.is_set():
                op, header, body, fds = P.recv(s.conn)
                for fd in fds:
                    os.close(fd)  # engines send none
                try:
                    reply, extra_fds = self._handle(s, op, header, body)
                    P.send(s.conn, P.OK, reply, fds=extra_fds)
                except (P.ProtocolError, LMCacheError, ValueError, KeyError, TypeError, OverflowError) as e:
                    # A bad request is answered with one line; the session and the server go on.
                    P.send(s.conn, P.ERROR, {"error": f"{type(e).__name__}: {e}"})
        except (P.ProtocolError, OSError) as e:
            if not isinstance(e, P.ProtocolError) or "closed" not in str(e):
                self.stats["protocol_errors"] += 1
        finally:
            self._end_session(s)

    def _end_session(self, s: _Session) -> None:
        """Gives back everything the engine held: it is gone (closed, crashed or killed)."""
        with s.lock:
            leases, writes = list(s.leases.values()), list(s.writes.values())
            s.leases.clear()
            s.writes.clear()
        for pool, keys, _ in leases:
            _quietly(pool.runtime.release_held, keys)
        for pool, keys, slabs, _ in writes:
            _quietly(pool.runtime.abort_written, keys, slabs)
        self.stats["leases_reclaimed"] += len(leases)
        self.stats["writes_reclaimed"] += len(writes)
        with self._sessions_lock:
            self._sessions.discard(s)
        s.conn.close()

    def _reap_loop(self) -> None:
        # A lease or reservation older than server_lease_timeout_s is taken
        # back even while its engine lives (a hung engine must not pin the pool).
        while not self._stop.wait(min(1.0, self.lease_timeout_s / 4)):
            now = time.monotonic()
            with self._sessions_lock:
                sessions = list(self._sessions)
            for s in sessions:
                with s.lock:
                    old_leases = [i for i, (_, _, deadline) in s.leases.items() if deadline < now]
                    leases = [s.leases.pop(i) for i in old_leases]
                    old_writes = [i for i, w in s.writes.items() if w[3] < now]
                    writes = [s.writes.pop(i) for i in old_writes]
                for pool, keys, _ in leases:
                    _quietly(pool.runtime.release_held, keys)
                for pool, keys, slabs, _ in writes:
                    _quietly(pool.runtime.abort_written, keys, slabs)
                self.stats["leases_expired"] += len(leases) + len(writes)

    # ------------------------------------------------------------ requests
    def _pool(self, header: dict) -> Pool:
        pool_id = P.field(header, "pool", int)
        with self._pools_lock:
            for pool in self._pools.values():
                if pool.id == pool_id:
                    return pool
        raise KeyError(f"no pool {pool_id}")

    def _get_or_make_pool(self, shape: Shape) -> Pool:
        with self._pools_lock:
            pool = self._pools.get(shape)
            if pool is None:
                if len(self._pools) >= MAX_POOLS:
                    raise P.ProtocolError(f"this server already holds {MAX_POOLS} KV shapes (each a pool of "
                                          "l1_capacity_gb); run another server for more models")
                pool = self._pools[shape] = Pool(len(self._pools) + 1, self.config, shape)
                logger.info("lmcache server: pool %d for KV shape %s (%d slabs of %d bytes)", pool.id, shape,
                            pool.region_bytes // pool.slab_bytes, pool.slab_bytes)
            return pool

    def _handle(self, s: _Session, op: int, h: dict, body: bytes):
        deadline = time.monotonic() + self.lease_timeout_s
        if op == P.HELLO:
            self.stats["attaches"] += 1
            return {"version": P.VERSION, "server_id": self.server_id, "chunk_size": self.config.chunk_size}, None
        if op == P.SHAPE:
            shape = tuple(h.get("shape") or ())
            if len(shape) != 6 or not all(isinstance(v, int) for i, v in enumerate(shape) if i != 4) \
                    or not isinstance(shape[4], str):
                raise P.ProtocolError("shape must be [layers, planes, heads, head_dim, dtype, opaque_block_size]")
            pool = self._get_or_make_pool(shape)
            return {"pool": pool.id, "region_bytes": pool.region_bytes, "slab_bytes": pool.slab_bytes,
                    "disk_backend": pool.engine.disk_backend}, [pool.fd]
        pool = self._pool(h)
        rt = pool.runtime
        keys = _core.ChunkKeys.from_bytes(body)
        if op == P.LOOKUP:
            return {"chunks": rt.lookup(keys)}, None
        if op == P.HOLD:
            max_chunks = P.field(h, "max_chunks", int)
            if not 0 <= max_chunks <= len(keys):
                raise P.ProtocolError("max_chunks must be between 0 and the number of keys")
            slabs = rt.hold_prefix(keys, max_chunks)
            lease = next(self._ids)
            with s.lock:
                s.leases[lease] = (pool, keys[: len(slabs)], deadline)
            self.stats["leases"] += 1
            return {"lease": lease, "slabs": slabs}, None
        if op == P.RELEASE:
            with s.lock:
                held = s.leases.pop(P.field(h, "lease", int), None)
            if held is not None:  # else it timed out and was taken back already
                rt.release_held(held[1])
            return {"released": held is not None}, None
        if op == P.RESERVE:
            slabs = rt.reserve_for_write(keys)
            write = next(self._ids)
            with s.lock:
                s.writes[write] = (pool, keys, slabs, deadline)
            return {"write": write, "slabs": slabs}, None
        if op in (P.COMMIT, P.ABORT):
            with s.lock:
                w = s.writes.pop(P.field(h, "write", int), None)
            if w is None:
                return {"published": 0}, None
            if op == P.ABORT:
                rt.abort_written(w[1], w[2])
                return {"published": 0}, None
            return {"published": rt.commit_written(w[1], w[2])}, None
        if op in (P.PIN, P.UNPIN):
            return {"chunks": rt.pin(keys) if op == P.PIN else rt.unpin(keys)}, None
        if op == P.CLEAR:
            return {"removed": rt.clear(bool(h.get("include_disk", True)))}, None
        if op == P.STATS:
            return {"stats": rt.stats(), "server": dict(self.stats)}, None
        if op == P.LOCATE:
            return rt.locate(keys), None
        if op == P.PREFETCH:
            return {"chunks": rt.prefetch(keys)}, None
        if op == P.EVICT:
            return {"removed": rt.evict(keys, bool(h.get("include_disk", False)))}, None
        if op == P.FLUSH:
            rt.flush_writes()
            return {}, None
        raise P.ProtocolError(f"unknown operation {op}")


def _peer_creds(conn: socket.socket) -> Optional[tuple[int, int]]:
    try:
        pid, uid, _ = peer_creds(conn)
        return pid, uid
    except OSError:
        return None


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except LMCacheError as e:  # closed during shutdown: nothing left to give back
        logger.debug("lmcache server: %s", e)


def serve(config: Config, socket_path: str) -> int:
    """Runs the server until SIGINT or SIGTERM."""
    import signal

    server = NodeServer(config, socket_path)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: server.stop())
    print(f"lmcache server: serving {server.path} (pid {os.getpid()}); SIGTERM stops", flush=True)
    server.wait()
    server.stop()
    return 0
