"""An engine's side of the node server: ServerRuntime stands where
CacheEngine's native runtime would (same calls), so the vLLM connector and
the SGLang backend use the node's cache by configuration only
(`server_socket`).

Keys are computed here, in the engine's own namespace (model, KV shape,
tensor-parallel rank, tenant); the server only sees them. Data never goes
through the socket: the server hands over its pool's memory file once, and
lmcache._core.SharedMover copies records between it and the KV cache.

While the server is away (not started, crashed, restarting) every lookup is
a miss, loads deliver nothing and stores are skipped; every
`server_reconnect_s` the next call tries to attach again, and a new server
(a new pool file) is mapped afresh.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading
import time
from typing import Any, Optional

from lmcache import _core
from lmcache.config import Config
from lmcache.errors import ConfigError, InvalidStateError
from lmcache.peer_creds import peer_creds
from lmcache.server import protocol as P

logger = logging.getLogger(__name__)

_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float8_e4m3": 1, "float8_e5m2": 1, "uint8": 1}


class ServerUnavailable(Exception):
    """The server is not answering now (a miss, not an error)."""


class ServerRuntime:
    def __init__(self, config: Config, *, tp_rank: int, tp_size: int, record_key: bytes = b"") -> None:
        self._config = config
        self._path = os.path.abspath(config.server.server_socket)
        self._tp = (tp_rank, tp_size)
        self._record_key = record_key
        # One request at a time on the connection, and a load's or store's
        # whole sequence (lease, copy, release) under it: a reattach by
        # another thread (the lookup thread) remaps the pool, which must
        # never happen under a copy.
        self._lock = threading.RLock()
        self._sock: Optional[socket.socket] = None
        self._server_id = ""
        self._pool = 0
        self._shape: Optional[tuple] = None
        self._keys_rt: Optional[_core.Runtime] = None  # keys only: no pool of its own worth the name
        self._mover = _core.SharedMover(config.num_copy_threads)
        self._next_try = 0.0
        self._closed = False
        self._disk_backend = ""
        self._last_stats: dict = {}
        self.client_stats = {"server_attaches": 0, "server_unavailable": 0, "server_errors": 0}
        try:
            self._connect()
        except ServerUnavailable as e:
            logger.warning("lmcache: node server %s not available yet (%s); lookups are misses until it is",
                           self._path, e)

    # ------------------------------------------------------------ shape and keys
    def set_shape(self, num_layers, num_planes, num_heads, head_dim, dtype, opaque_block_size=0) -> None:
        shape = (int(num_layers), int(num_planes), int(num_heads), int(head_dim), str(dtype), int(opaque_block_size))
        if self._shape is not None:
            if shape != self._shape:
                raise InvalidStateError(f"KV shape {shape} differs from the registered {self._shape}")
            return
        self._keys_rt = _core.Runtime(**self._key_options(shape), record_key=self._record_key)
        self._keys_rt.set_shape(*shape)
        self._shape = shape
        with self._lock:
            if self._sock is not None:
                try:
                    self._attach_pool()
                except ServerUnavailable:
                    pass

    def register_layout(self, layout) -> None:
        if layout.device >= 0:
            # SharedMover copies host-memory caches; registering the mapped
            # pool with CUDA for the kernels is not built yet.
            raise ConfigError("config key 'server_socket': the node server serves KV caches in host memory only "
                              "in this version; a GPU engine keeps its own cache (unset server_socket)")
        opaque = layout.block_size if layout.opaque_block_bytes else 0
        self.set_shape(layout.num_layers, layout.num_planes, layout.num_heads, layout.head_dim, layout.dtype, opaque)
        self._keys_rt.register_layout(layout)

    def keys(self, tokens):
        return self._need_keys().keys(tokens)

    def keys_from_ids(self, ids):
        return self._need_keys().keys_from_ids(ids)

    # ------------------------------------------------------------ operations
    def lookup(self, keys) -> int:
        reply = self._ask(P.LOOKUP, {}, keys, default=None)
        return reply["chunks"] if reply else 0

    def begin_load(self, keys, layout, slots, stream: int = 0) -> "_Load":
        with self._lock:
            return self._load_locked(keys, layout, slots)

    def _load_locked(self, keys, layout, slots) -> "_Load":
        cs = self._config.chunk_size
        n = len(slots) if hasattr(slots, "__len__") else 0
        reply = self._ask(P.HOLD, {"max_chunks": (n + cs - 1) // cs}, keys, default=None)
        if not reply or not reply["slabs"]:
            if reply:
                self._ask(P.RELEASE, {"lease": reply["lease"]}, None, default=None)
            return _Load(0, layout.num_layers)
        slabs = P.int_list(reply, "slabs")
        try:
            tokens = self._mover.load(layout, cs, slots, keys[: len(slabs)], slabs, self._config.verify_l1_checksums)
        finally:
            self._ask(P.RELEASE, {"lease": reply["lease"]}, None, default=None)
        return _Load(tokens, layout.num_layers)

    def begin_store(self, keys, layout, slots, stream: int = 0) -> "_Store":
        with self._lock:
            return self._store_locked(keys, layout, slots)

    def _store_locked(self, keys, layout, slots) -> "_Store":
        cs = self._config.chunk_size
        whole = min(len(keys), len(slots) // cs)
        if whole == 0:
            return _Store(0)
        want = keys[:whole]
        reply = self._ask(P.RESERVE, {}, want, default=None)
        if not reply:
            return _Store(0)
        slabs = P.int_list(reply, "slabs")
        if not any(s >= 0 for s in slabs):
            self._ask(P.ABORT, {"write": reply["write"]}, None, default=None)
            return _Store(0)
        try:
            self._mover.store(layout, cs, slots, want, slabs)
        except BaseException:
            self._ask(P.ABORT, {"write": reply["write"]}, None, default=None)
            raise
        done = self._ask(P.COMMIT, {"write": reply["write"]}, None, default=None)
        return _Store((done or {}).get("published", 0) * cs)

    def pin(self, keys) -> int:
        return (self._ask(P.PIN, {}, keys, default=None) or {}).get("chunks", 0)

    def unpin(self, keys) -> int:
        return (self._ask(P.UNPIN, {}, keys, default=None) or {}).get("chunks", 0)

    def clear(self, include_disk: bool = True) -> int:
        return (self._ask(P.CLEAR, {"include_disk": include_disk}, None, default=None) or {}).get("removed", 0)

    def locate(self, keys) -> dict:
        return self._ask(P.LOCATE, {}, keys, default=None) or {"host": 0, "disk": 0, "remote": 0, "any": 0}

    def prefetch(self, keys) -> int:
        return (self._ask(P.PREFETCH, {}, keys, default=None) or {}).get("chunks", 0)

    def evict(self, keys, include_disk: bool = False) -> int:
        return (self._ask(P.EVICT, {"include_disk": include_disk}, keys, default=None) or {}).get("removed", 0)

    def flush_writes(self) -> None:
        self._ask(P.FLUSH, {}, None, default=None)

    def stats(self) -> dict:
        reply = self._ask(P.STATS, {}, None, default=None)
        if reply:
            self._last_stats = {**reply["stats"], **{f"server_{k}": v for k, v in reply["server"].items()}}
        if not self._last_stats:
            # Never reached the server yet: every counter at zero, under the names the runtime uses.
            zeros = {k: (False if isinstance(v, bool) else 0) for k, v in self._keys_rt.stats().items()} \
                if self._keys_rt is not None else {}
            self._last_stats = {"lookups": 0, "lookup_tokens": 0, "lookup_hit_tokens": 0, "loaded_tokens": 0,
                                "loaded_chunks": 0, "stored_chunks": 0, "disk_enabled": False,
                                "remote_enabled": False, **zeros}
        stats = dict(self._last_stats)
        stats.update(self.client_stats)
        stats["server_connected"] = self._sock is not None
        return stats

    @property
    def disk_backend(self) -> str:
        return self._disk_backend

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()
            self._mover.unmap()

    # ------------------------------------------------------------ connection
    def _need_keys(self) -> _core.Runtime:
        if self._keys_rt is None:
            raise InvalidStateError("the KV shape is not known yet: register the KV cache (or set the shape) first")
        return self._keys_rt

    def _key_options(self, shape: tuple) -> dict:
        # The engine's namespace, and host memory for one record (keys need a
        # shape, and a shape needs a pool; the server's pool holds the data).
        layers, planes, heads, head_dim, dtype, _ = shape
        record = 128 + layers * planes * self._config.chunk_size * heads * head_dim * _DTYPE_BYTES.get(dtype, 4)
        opts = self._config.runtime_options()
        opts.update(l1_capacity_gb=(record + (1 << 20)) / 2**30, local_disk_path="", num_copy_threads=1,
                    l1_shared_memory=False)
        opts["tp_rank"], opts["tp_size"] = self._tp
        return opts

    def _ask(self, op: int, header: dict, keys, *, default: Any) -> Any:
        """The server's reply, or `default` while it is away (a miss)."""
        with self._lock:
            if self._closed:
                raise InvalidStateError("this lmcache engine is closed")
            try:
                if self._sock is None:
                    if time.monotonic() < self._next_try:
                        self.client_stats["server_unavailable"] += 1
                        return default
                    self._connect_locked()
                if op not in (P.HELLO, P.SHAPE):
                    header = {**header, "pool": self._pool}
                P.send(self._sock, op, header, keys.to_bytes() if keys is not None else b"")
                rop, reply, _, fds = P.recv(self._sock)
                for fd in fds:
                    os.close(fd)
            except (ServerUnavailable, P.ProtocolError, OSError) as e:
                self.client_stats["server_unavailable"] += 1
                if self._sock is not None:
                    logger.warning("lmcache: lost the node server at %s (%s); lookups are misses until it is back",
                                   self._path, e)
                self._drop()
                return default
            if rop != P.OK:
                self.client_stats["server_errors"] += 1
                logger.warning("lmcache: the node server refused a request: %s", reply.get("error"))
                return default
            return reply

    def _connect(self) -> None:
        with self._lock:
            self._connect_locked()

    def _connect_locked(self) -> None:
        self._next_try = time.monotonic() + self._config.server.server_reconnect_s
        _check_socket_dir(self._path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(max(30.0, self._config.server.server_lease_timeout_s))
        try:
            sock.connect(self._path)
            # The server must be of our user (or root): nobody else may hand us a pool to write KV into.
            _, uid, _ = peer_creds(sock)
            if uid not in (os.geteuid(), 0):
                raise ServerUnavailable(f"{self._path} is served by uid {uid}, not ours")
            P.send(sock, P.HELLO, {"version": P.VERSION})
            op, hello, _, _ = P.recv(sock)
            if op != P.OK or hello.get("version") != P.VERSION:
                raise ServerUnavailable(f"the server speaks another version ({hello})")
            if hello.get("chunk_size") != self._config.chunk_size:
                raise ServerUnavailable(f"the server's chunk_size is {hello.get('chunk_size')}, this engine's "
                                        f"{self._config.chunk_size}")
        except (OSError, P.ProtocolError) as e:
            sock.close()
            raise ServerUnavailable(str(e)) from None
        except ServerUnavailable:
            sock.close()
            raise
        self._sock = sock
        if hello["server_id"] != self._server_id:
            if self._server_id:
                logger.info("lmcache: attached to a new node server at %s", self._path)
            self._server_id = hello["server_id"]
        self.client_stats["server_attaches"] += 1
        if self._shape is not None:
            self._attach_pool()

    def _attach_pool(self) -> None:
        """Asks for the pool of our shape and maps it (called with the lock held)."""
        try:
            P.send(self._sock, P.SHAPE, {"shape": list(self._shape)})
            op, reply, _, fds = P.recv(self._sock, want_fds=1)
        except (OSError, P.ProtocolError) as e:
            self._drop()
            raise ServerUnavailable(str(e)) from None
        try:
            if op != P.OK or len(fds) != 1:
                raise ServerUnavailable(f"the server gave no pool: {reply.get('error', reply)}")
            fd = fds[0]
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size < reply["region_bytes"]:
                raise ServerUnavailable("the server's pool is not a memory file of the size it says")
            self._mover.map(fd, reply["region_bytes"], reply["slab_bytes"])
            self._pool = reply["pool"]
            self._disk_backend = reply.get("disk_backend", "")
        except ServerUnavailable:
            self._drop()
            raise
        finally:
            for fd in fds:
                os.close(fd)

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None


class _Load:
    """A load through the server: the copy is done when this is made (the
    records are leased only for that long), so every step after is free."""

    def __init__(self, tokens: int, num_layers: int) -> None:
        self.tokens, self.num_layers = tokens, num_layers
        self.layers_done = num_layers

    def load_layers(self, end_layer: int) -> None:
        return

    def finish(self) -> None:
        return


class _Store:
    def __init__(self, tokens: int) -> None:
        self.tokens = tokens

    def finish(self) -> int:
        return self.tokens


def _check_socket_dir(path: str) -> None:
    directory = os.path.dirname(path)
    try:
        st = os.lstat(directory)
    except OSError as e:
        raise ServerUnavailable(f"{directory}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (os.geteuid(), 0) or stat.S_IMODE(st.st_mode) & 0o022:
        raise ServerUnavailable(f"{directory!r} is not a directory of this user (or root) that others cannot write "
                                "to; refusing to attach through it")
