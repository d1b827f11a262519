"""RemoteStore: ties a RemoteTier to the native runtime.

- store: chunks newly stored in host memory are queued (bounded; when full
  they are dropped and counted, the engine never waits) and a background
  thread exports each record, encodes it and PUTs batches to the store;
- lookup: after the local prefix (host memory + disk) ends, one pipelined
  EXISTS asks how far the remote store continues it;
- load: the remote part of a prefix is fetched (one pipelined GET), decoded,
  checked and imported into host memory before the native load runs.

Every failure of the store is a miss and a counter; a bad value is refused
(and deleted, so nobody is offered it again).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from typing import Sequence

from lmcache import _core
from lmcache.remote import wire
from lmcache.remote.base import RemoteTier, RemoteUnavailable

logger = logging.getLogger(__name__)

_PUT_BATCH = 8
COUNTERS = (
    "remote_puts", "remote_put_bytes", "remote_put_record_bytes", "remote_put_dropped", "remote_put_skipped",
    "remote_lookup_hit_chunks", "remote_gets", "remote_get_bytes", "remote_get_missing", "remote_bad_values",
    "remote_errors", "remote_exists_errors", "remote_get_errors", "remote_put_errors",
)


class RemoteStore:
    def __init__(self, runtime: "_core.Runtime", tier: RemoteTier, *, codec: str, queue_chunks: int) -> None:
        self._rt, self.tier, self.codec = runtime, tier, codec
        self._queue: "queue.Queue[str | None]" = queue.Queue(maxsize=queue_chunks)
        self._known = _RecentKeys(65536)  # keys we put or saw on the remote: not put again
        self._lock = threading.Lock()
        self.stats = collections.Counter({name: 0 for name in COUNTERS})
        self._writer = threading.Thread(target=self._write_loop, name="lmcache-remote-writer", daemon=True)
        self._writer.start()
        self._warned = False

    # ------------------------------------------------------------ store side
    def enqueue(self, keys: Sequence[str]) -> None:
        for k in keys:
            if k in self._known:
                continue
            try:
                self._queue.put_nowait(k)
            except queue.Full:
                self._count("remote_put_dropped")

    def flush(self) -> None:
        """Blocks until every queued chunk was written (or failed)."""
        self._queue.join()

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            batch: list[str] = []
            item = self._queue.get()
            while True:
                if item is None:  # close(): finish this batch, then end
                    stop = True
                    self._queue.task_done()
                else:
                    batch.append(item)
                if stop or len(batch) >= _PUT_BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            try:
                if batch:
                    self._write(batch)
            except Exception as e:  # never let the writer die
                logger.warning("lmcache remote writer: %s", e)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _write(self, keys: list[str]) -> None:
        items = []
        for k in keys:
            if self.codec == "none":
                value = self._rt.export_record(k, wire.header_for_raw(self._rt.record_bytes))
            else:
                record = self._rt.export_record(k)
                value = None if record is None else wire.encode(record, self.codec)
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
        for k, v in items:
            self._known.add(k)
        self._count("remote_puts", len(items))
        self._count("remote_put_bytes", sum(len(v) for _, v in items))
        self._count("remote_put_record_bytes", len(items) * self._rt.record_bytes)

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
    def fetch(self, keys: Sequence[str]) -> int:
        """Brings the leading `keys` into host memory; returns how many made it."""
        if not keys:
            return 0
        try:
            values = self.tier.get(keys)
        except RemoteUnavailable as e:
            self._unavailable("get", e, 0)
            return 0
        expected = self._rt.record_bytes
        for n, (k, v) in enumerate(zip(keys, values)):
            if v is None:  # gone since lookup (server-side eviction, another client)
                self._count("remote_get_missing")
                return n
            try:
                record = wire.decode(v, expected)
            except wire.WireError as e:
                return self._refuse(k, n, f"value refused: {e}")
            if not self._rt.import_record(k, record):
                return self._refuse(k, n, "record refused by the runtime (corrupt or no room)")
            self._count("remote_gets")
            self._count("remote_get_bytes", len(v))
        return len(keys)

    def _refuse(self, key: str, n: int, why: str) -> int:
        self._count("remote_bad_values")
        logger.warning("lmcache remote tier %s: chunk %s %s", self.tier.display_name, key, why)
        try:
            self.tier.delete([key])
        except RemoteUnavailable:
            pass
        self._known.discard(key)
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

    def close(self) -> None:
        try:
            self._queue.put(None, timeout=30)
        except queue.Full:
            pass
        self._writer.join(timeout=30)
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
