"""RemoteStore: ties a RemoteTier to the native runtime.

- store: chunks newly stored in host memory are queued (bounded; when full,
  or after close(), they are dropped and counted, the engine never waits) and
  a background thread exports each record, seals it (lmcache.remote.wire)
  and PUTs batches to the store;
- lookup: after the local prefix (host memory + disk) ends, one pipelined
  EXISTS asks how far the remote store continues it;
- load: the remote part of a prefix is fetched in GET batches of bounded size,
  never more than host memory can hold next to the rest of the same load;
  each value is authenticated, decoded, and imported into host memory before
  the native load runs.

Every failure of the store is a miss and a counter. A value that is proven
bad (header, tag, record checksum) is refused and deleted, so nobody is
offered it again; a value this machine merely cannot take (no room in host
memory, a codec module not installed here) is a local miss and stays.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Sequence

from lmcache import _core
from lmcache.remote import wire
from lmcache.remote.base import RemoteTier, RemoteUnavailable

logger = logging.getLogger(__name__)

_PUT_BATCH = 8
_FETCH_BATCH_BYTES = 64 << 20  # values held at once by one GET pipeline (at least one record)
_SLAB_ALIGNMENT = 4096  # host-memory slabs are records rounded up to this (cpp/host_pool.h)
COUNTERS = (
    "remote_puts", "remote_put_bytes", "remote_put_record_bytes", "remote_put_dropped", "remote_put_skipped",
    "remote_lookup_hit_chunks", "remote_gets", "remote_get_bytes", "remote_get_missing", "remote_bad_values",
    "remote_get_batches", "remote_get_no_room", "remote_get_codec_unavailable", "remote_get_not_ours",
    "remote_get_beyond_l1",
    "remote_errors", "remote_exists_errors", "remote_get_errors", "remote_put_errors",
)


class RemoteStore:
    def __init__(self, runtime: "_core.Runtime", tier: RemoteTier, *, codec: str, queue_chunks: int,
                 record_key: bytes, encrypt: bool = False, fetch_batch_bytes: int = _FETCH_BATCH_BYTES) -> None:
        if codec not in wire.CODECS:
            raise ValueError(f"unknown codec {codec!r}")
        self._rt, self.tier, self.codec = runtime, tier, codec
        self._key = wire.RecordKey(record_key)  # the raw key is kept nowhere else
        self.encrypt = bool(encrypt)
        self._fetch_batch_bytes = fetch_batch_bytes
        self._queue_max = queue_chunks
        self._known = _RecentKeys(65536)  # keys we put or saw on the remote: not put again
        self._lock = threading.Lock()
        self.stats = collections.Counter({name: 0 for name in COUNTERS})
        self._warned = False
        self._warned_codec = False
        # Writer state, all under _cond: keys waiting, keys being written, and
        # whether close() was called / the writer has ended.
        self._cond = threading.Condition()
        self._pending: "collections.deque[str]" = collections.deque()
        self._in_flight = 0
        self._closing = False
        self._stopped = False
        self._writer = threading.Thread(target=self._write_loop, name="lmcache-remote-writer", daemon=True)
        self._writer.start()

    def __repr__(self) -> str:
        return f"RemoteStore({self.tier.display_name}, codec={self.codec}, encrypt={self.encrypt})"

    # ------------------------------------------------------------ store side
    def enqueue(self, keys: Sequence[str]) -> None:
        dropped = 0
        with self._cond:
            for k in keys:
                if k in self._known:
                    continue
                if self._closing or len(self._pending) >= self._queue_max:
                    dropped += 1
                else:
                    self._pending.append(k)
            self._cond.notify()
        if dropped:
            self._count("remote_put_dropped", dropped)

    def flush(self) -> None:
        """Returns once every queued chunk was written (or failed), or the writer has stopped."""
        with self._cond:
            while (self._pending or self._in_flight) and not self._stopped:
                self._cond.wait()

    def _write_loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closing:
                        self._cond.wait()
                    if not self._pending:  # closing, and every queued chunk is written
                        return
                    batch = [self._pending.popleft() for _ in range(min(_PUT_BATCH, len(self._pending)))]
                    self._in_flight = len(batch)
                try:
                    self._write(batch)
                except Exception as e:  # never let the writer die
                    logger.warning("lmcache remote writer: %s", e)
                finally:
                    with self._cond:
                        self._in_flight = 0
                        self._cond.notify_all()
        finally:
            with self._cond:
                self._stopped = True
                self._cond.notify_all()

    def _write(self, keys: list[str]) -> None:
        items = []
        for k in keys:
            value = self._export_value(k)
            if value is None:  # evicted from host memory before its turn
                self._count("remote_put_skipped")
                continue
            items.append((k, value))
        if not items:
            return
        try:
            self.tier.put(items)
        except RemoteUnavailable as e:
            self._unavailable("put", e, len(items))
            return
        for k, _ in items:
            self._known.add(k)
        self._count("remote_puts", len(items))
        self._count("remote_put_bytes", sum(len(v) for _, v in items))
        self._count("remote_put_record_bytes", len(items) * self._rt.record_bytes)

    def _export_value(self, k: str):
        """The sealed value of chunk `k`, or None when it left host memory."""
        if self.codec == "none" and not self.encrypt:
            # One copy: the runtime writes the record after room for the header,
            # and the header (with the record's GMAC) into that room.
            record_bytes = self._rt.record_bytes
            return self._rt.export_record(k, wire.HEADER_BYTES, lambda body: wire.seal_header(
                body, wire.CODECS["none"], record_bytes, chunk_key=k, key=self._key))
        record = self._rt.export_record(k)
        if record is None:
            return None
        return wire.encode(record, self.codec, chunk_key=k, key=self._key, encrypt=self.encrypt)

    # ------------------------------------------------------------ lookup side
    def count_prefix(self, keys: Sequence[str]) -> int:
        """How many leading `keys` the remote store has (0 when it cannot say)."""
        if not keys:
            return 0
        try:
            present = self.tier.exists(keys)
        except RemoteUnavailable as e:
            self._unavailable("exists", e, 0)
            return 0
        n = 0
        while n < len(present) and present[n]:
            self._known.add(keys[n])
            n += 1
        self._count("remote_lookup_hit_chunks", n)
        return n

    # ------------------------------------------------------------ load side
    def fetch_into_runtime(self, keys: Sequence[str], wanted: int) -> int:
        """For a load of the first `wanted` chunks of `keys`: brings those that only
        the remote store has into host memory. Returns the leading chunks now local."""
        wanted = min(wanted, len(keys))
        local = self._rt.lookup_keys(list(keys[:wanted])) if wanted else 0
        if local >= wanted:
            return local
        return local + self.fetch(keys[local:wanted], held_chunks=local)

    def fetch(self, keys: Sequence[str], held_chunks: int = 0) -> int:
        """Brings the leading `keys` into host memory; returns how many made it.

        `held_chunks` chunks of the same load are already local; together with
        them, at most what host memory holds is fetched: importing more would
        evict this load's first chunks before it could use them."""
        record_bytes = self._rt.record_bytes
        if not keys or record_bytes == 0:  # no shape yet: nothing can be imported
            return 0
        slab = -(-record_bytes // _SLAB_ALIGNMENT) * _SLAB_ALIGNMENT
        capacity = self._rt.stats()["l1_capacity_bytes"]
        total = max(0, min(len(keys), capacity // slab - held_chunks))
        if total < len(keys):
            self._count("remote_get_beyond_l1", len(keys) - total)
        batch = max(1, min(self._fetch_batch_bytes, capacity // 4) // record_bytes)
        done = 0
        while done < total:
            part = keys[done:min(total, done + batch)]
            got = self._fetch_batch(part, record_bytes)
            done += got
            if got < len(part):
                break
        return done

    def _fetch_batch(self, keys: Sequence[str], record_bytes: int) -> int:
        """One pipelined GET; imports the leading values that are whole and authentic."""
        try:
            values = list(self.tier.get(keys))
        except RemoteUnavailable as e:
            self._unavailable("get", e, 0)
            return 0
        self._count("remote_get_batches")
        for n, k in enumerate(keys):
            value, values[n] = values[n], None  # hold each value only until it is imported
            if value is None:  # gone since lookup (server-side eviction, another client)
                self._count("remote_get_missing")
                return n
            try:
                record = wire.decode(value, chunk_key=k, expected_record_bytes=record_bytes, key=self._key)
            except wire.WireError as e:
                if e.integrity:
                    return self._refuse(k, n, f"value refused: {e}")
                counter = "remote_get_not_ours" if isinstance(e, wire.NotOurs) else "remote_get_codec_unavailable"
                return self._keep(k, n, counter, str(e))
            outcome = self._rt.import_record(k, record)
            if outcome == "corrupt":
                return self._refuse(k, n, "record refused by the runtime (corrupt)")
            if outcome == "no_room":
                return self._keep(k, n, "remote_get_no_room", "")
            self._count("remote_gets")
            self._count("remote_get_bytes", len(value))
        return len(keys)

    def _refuse(self, key: str, n: int, why: str) -> int:
        """A proven-bad value: counted, and deleted from the store."""
        self._count("remote_bad_values")
        logger.warning("lmcache remote tier %s: chunk %s %s", self.tier.display_name, key, why)
        try:
            self.tier.delete([key])
        except RemoteUnavailable:
            pass
        self._known.discard(key)
        return n

    def _keep(self, key: str, n: int, counter: str, why: str) -> int:
        """A good value this machine cannot take now: a local miss; the value stays for others."""
        self._count(counter)
        if why and not self._warned_codec:  # once: a misconfiguration repeats on every chunk
            logger.warning("lmcache remote tier %s: chunk %s kept but not loaded: %s",
                           self.tier.display_name, key, why)
            self._warned_codec = True
        return n

    # ------------------------------------------------------------ misc
    def _unavailable(self, op: str, e: Exception, dropped: int) -> None:
        # The server may come back empty (a restart): what we knew it held is stale.
        self._known.clear()
        self._count("remote_errors")
        self._count(f"remote_{op}_errors")
        if dropped:
            self._count("remote_put_dropped", dropped)
        if not self._warned:  # one line, not one per request, while the store is down
            logger.warning("lmcache remote tier unavailable (%s); serving without it: %s", op, e)
            self._warned = True

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.stats[name] += n
            if name in ("remote_puts", "remote_gets", "remote_lookup_hit_chunks"):
                self._warned = False

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self.stats)

    def close(self, timeout_s: float = 60.0) -> None:
        """Writes what is queued (it reads host memory, so call this before closing the
        runtime), then stops the writer; later enqueues are dropped and counted."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._writer.join(timeout=timeout_s)
        self.tier.close()


class _RecentKeys:
    """A bounded set (oldest forgotten first)."""

    def __init__(self, size: int) -> None:
        self._d: "collections.OrderedDict[str, None]" = collections.OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def __contains__(self, k: str) -> bool:
        with self._lock:
            return k in self._d

    def add(self, k: str) -> None:
        with self._lock:
            self._d[k] = None
            self._d.move_to_end(k)
            if len(self._d) > self._size:
                self._d.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()

    def discard(self, k: str) -> None:
        with self._lock:
            self._d.pop(k, None)
