"""RemoteStore: lmcache's client of the remote tier, plugged into the runtime.

The runtime owns the walk over the tiers (cpp/runtime/remote_tier.h): it
asks this client how far a prefix goes on where host memory and disk end,
has it fetch the part of a load only the store has (no more than host memory
holds), and queues published chunks for its own writer thread, which calls
put(). This client does the store's side of each:

- count_prefix: one pipelined EXISTS;
- fetch: GET batches of bounded size; each value is authenticated and
  decoded (lmcache.remote.wire) and imported into host memory, where the
  runtime checks the record again;
- put: each record is exported from host memory, sealed and encoded, and
  written in one pipelined SET.

Every failure of the store is a miss and a counter, counted in the
runtime's stats (Runtime.count_remote). A value that is proven bad (header,
tag, record checksum) is refused and deleted, so nobody is offered it again;
a value this machine merely cannot take (no room in host memory, a codec
module not installed here, another secret) is a local miss and stays.
"""

from __future__ import annotations

import collections
import logging
import threading
import weakref
from typing import Sequence

from lmcache import _core
from lmcache.remote import wire
from lmcache.remote.base import RemoteTier, RemoteUnavailable

logger = logging.getLogger(__name__)

_FETCH_BATCH_BYTES = 64 << 20  # values held at once by one GET pipeline (at least one record)


class RemoteStore:
    def __init__(self, runtime: "_core.Runtime", tier: RemoteTier, *, codec: str, queue_chunks: int,
                 record_key: bytes, encrypt: bool = False, fetch_batch_bytes: int = _FETCH_BATCH_BYTES) -> None:
        if codec not in wire.CODECS:
            raise ValueError(f"unknown codec {codec!r}")
        # Weakly: the runtime holds this client, and the two must not keep each other alive.
        self._rt = weakref.proxy(runtime)
        self.tier, self.codec = tier, codec
        self._key = wire.RecordKey(record_key)  # the raw key is kept nowhere else
        self.encrypt = bool(encrypt)
        self._fetch_batch_bytes = fetch_batch_bytes
        self._known = _RecentKeys(65536)  # keys we put or saw on the remote: not put again
        self._warned = False
        self._warned_codec = False
        self._warn_lock = threading.Lock()
        runtime.set_remote_tier(self, queue_chunks)

    def __repr__(self) -> str:
        return f"RemoteStore({self.tier.display_name}, codec={self.codec}, encrypt={self.encrypt})"

    # ------------------------------------------------------------ store side
    def put(self, chunk_keys: "_core.ChunkKeys") -> None:
        """Writes the chunks of `chunk_keys` (on the runtime's writer thread)."""
        items = []
        for k in chunk_keys.hex():
            if k in self._known:
                continue
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
    def count_prefix(self, chunk_keys: "_core.ChunkKeys") -> int:
        """How many leading keys the remote store has (0 when it cannot say)."""
        if not len(chunk_keys):
            return 0
        keys = chunk_keys.hex()
        try:
            present = self.tier.exists(keys)
        except RemoteUnavailable as e:
            self._unavailable("exists", e, 0)
            return 0
        n = 0
        while n < len(present) and present[n]:
            self._known.add(keys[n])
            n += 1
        if n:
            self._warned = False
        return n

    # ------------------------------------------------------------ load side
    def fetch(self, chunk_keys: "_core.ChunkKeys") -> int:
        """Brings the leading keys into host memory; returns how many made it.
        The runtime decides how many to ask for (never more than host memory holds)."""
        keys = chunk_keys.hex()
        record_bytes = self._rt.record_bytes
        if not keys or record_bytes == 0:  # no shape yet: nothing can be imported
            return 0
        capacity = self._rt.stats()["l1_capacity_bytes"]
        batch = max(1, min(self._fetch_batch_bytes, capacity // 4) // record_bytes)
        done = 0
        while done < len(keys):
            part = keys[done:done + batch]
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
        self._warned = False
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
        with self._warn_lock:
            warn = bool(why) and not self._warned_codec  # once: a misconfiguration repeats on every chunk
            self._warned_codec = self._warned_codec or warn
        if warn:
            logger.warning("lmcache remote tier %s: chunk %s kept but not loaded: %s",
                           self.tier.display_name, key, why)
        return n

    # ------------------------------------------------------------ misc
    def _unavailable(self, op: str, e: Exception, dropped: int) -> None:
        # The server may come back empty (a restart): what we knew it held is stale.
        self._known.clear()
        self._count("remote_errors")
        self._count(f"remote_{op}_errors")
        if dropped:
            self._count("remote_put_dropped", dropped)
        with self._warn_lock:
            warn, self._warned = not self._warned, True
        if warn:  # one line, not one per request, while the store is down
            logger.warning("lmcache remote tier unavailable (%s); serving without it: %s", op, e)

    def _count(self, name: str, n: int = 1) -> None:
        try:
            self._rt.count_remote(name, n)
        except ReferenceError:  # the runtime is gone: nothing left to count for
            pass

    def close(self) -> None:
        """Closes the connection (after the runtime has closed: its writer may still put)."""
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
