"""CacheEngine: the Python face of the native runtime.

Knows tiers and keys, nothing of engines: adapters (lmcache.integrations)
turn an engine's objects into the neutral calls below. Every call does its
work in one native call with the GIL released.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from typing import Any, Optional, Sequence

import numpy as np

from lmcache import _core
from lmcache.config import Config
from lmcache.errors import ClosedError, ConfigError, InvalidArgumentError, InvalidStateError
from lmcache.latency import OperationLatencies
from lmcache.layouts import TensorOrList, describe, slots_from_blocks
from lmcache.log import configure as configure_logging
from lmcache.record_key import record_key



class CacheEngine:
    """Stores and loads KV caches by token ids.

    Typical use by an engine adapter::

        engine = CacheEngine(Config.load(overrides=extra_config), model_id="my-model")
        engine.register_kv_caches(kv_caches, layout="vllm_flash_attn")
        hit = engine.lookup(prompt)                       # leading tokens cached
        engine.load(prompt, slot_mapping=slots[:hit])     # into the engine's blocks
        engine.store(prompt, slot_mapping=slots)          # after prefill

    `tokens` may be a list of ints, a 1-D numpy array or a 1-D CPU torch
    tensor. `slot_mapping[i]` is token i's slot (block * block_size + offset);
    alternatively `block_ids` gives the request's block table. A negative slot
    skips the token on load.
    """

    def __init__(
        self,
        config: Optional[Config] = None,
        *,
        model_id: Optional[str] = None,
        tp_rank: int = 0,
        tp_size: int = 1,
        name: str = "main",
    ) -> None:
        self.config = config if config is not None else Config.load()
        if model_id and not self.config.model_id:
            self.config = self.config.replace(model_id=model_id)
        configure_logging(self.config.control.log_level)
        self.latencies = OperationLatencies()  # exported by lmcache.metrics
        key = record_key(self.config)  # None: the disk tier keeps a key of its own
        self._pid = os.getpid()
        self._remote = None
        if self.config.server.server_socket:
            # The node's cache (lmcache server): same calls, the server's tiers.
            from lmcache.server.client import ServerRuntime

            self._runtime = ServerRuntime(self.config, tp_rank=tp_rank, tp_size=tp_size, record_key=key or b"")
        else:
            options = self.config.runtime_options()
            options.update(self._disk_options(tp_rank, tp_size))
            self._runtime = _core.Runtime(**options, tp_rank=tp_rank, tp_size=tp_size, record_key=key or b"")
        if self.config.remote_url and not self.config.server.server_socket:
            from lmcache.remote import RemoteTls, make_remote_tier
            from lmcache.remote.store import RemoteStore

            c = self.config
            tls = RemoteTls(c.remote_tls_ca_file, c.remote_tls_cert_file, c.remote_tls_key_file)
            tier = make_remote_tier(c.remote_url, timeout_s=c.remote_timeout_s, tls=tls)
            self._remote = RemoteStore(self._runtime, tier, codec=self.config.remote_codec,
                                       queue_chunks=self.config.remote_queue_chunks, record_key=key,
                                       encrypt=self.config.encrypt_records)
            # The runtime's remote writer calls into Python: close (and so let it
            # finish) before the interpreter goes away, if the owner did not.
            atexit.register(_close_at_exit, weakref.ref(self))
        self._lock = threading.Lock()
        self._layout: Optional[_core.KVLayout] = None
        self._layout_name = "vllm_flash_attn"
        self._block_size: Optional[int] = None
        self._kv_caches: Any = None  # keeps the registered tensors (and so their memory) alive
        # The control API and metrics (control_port) see every cache of the process.
        from lmcache.control.server import attach

        self.name = attach(self, name, tp_rank)

    def _disk_options(self, tp_rank: int, tp_size: int) -> dict:
        # The disk tier's directory, made private here: each tensor-parallel
        # shard gets one of its own (and so its own lock).
        c = self.config
        if not c.local_disk_path:
            return {}
        path = c.local_disk_path
        if tp_size > 1:
            path = os.path.join(path, f"tp{tp_rank}-of-{tp_size}")
        try:
            # Private from the start (the native tier refuses a directory others can write to).
            os.makedirs(c.local_disk_path, mode=0o700, exist_ok=True)
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"config key 'local_disk_path': cannot use {path!r} as a directory: {e.strerror}") from None
        return {"local_disk_path": path}

    @property
    def disk_backend(self) -> str:
        """'io_uring' or 'threads' (' (buffered)' without O_DIRECT); '' without a disk tier."""
        return self._runtime.disk_backend

    def _check_not_forked(self) -> None:
        if os.getpid() != self._pid:
            raise InvalidStateError("this lmcache engine was created before a fork(): its writer threads are not "
                                    "in this process; create a new engine in the child")

    def flush_writes(self) -> None:
        """Waits until chunks queued for the disk and remote tiers are written."""
        self._check_not_forked()
        self._runtime.flush_writes()

    # ------------------------------------------------------------- set-up
    @property
    def chunk_size(self) -> int:
        return self.config.chunk_size

    def set_kv_shape(self, *, num_layers: int, num_heads: int, head_dim: int, dtype: str, mla: bool = False) -> None:
        """Fixes the KV shape before any cache is registered (e.g. a scheduler
        that looks up keys in a process that holds no KV tensors)."""
        self._runtime.set_shape(num_layers, 1 if mla else 2, num_heads, head_dim, dtype)

    def register_kv_shape(
        self, kv_caches: TensorOrList, layout: str = "vllm_flash_attn", *, block_size: Optional[int] = None
    ) -> None:
        """Fixes the KV shape from example tensors (e.g. a staging buffer) without
        making them the default target of store/load."""
        self._runtime.register_layout(describe(kv_caches, layout, block_size=block_size))
        with self._lock:
            self._layout_name, self._block_size = layout, block_size

    def register_kv_caches(
        self, kv_caches: TensorOrList, layout: str = "vllm_flash_attn", *, block_size: Optional[int] = None
    ) -> _core.KVLayout:
        """Describes the engine's KV tensors and makes them the default target of store/load."""
        described = describe(kv_caches, layout, block_size=block_size)
        self._runtime.register_layout(described)
        with self._lock:
            self._layout, self._kv_caches = described, kv_caches
            self._layout_name, self._block_size = layout, block_size
        return described

    # ------------------------------------------------------------- keys
    # Every operation takes a request as its token ids or as its ChunkKeys.
    # Tokens are hashed on each call; an adapter that looks up, loads and
    # stores the same request computes keys(tokens) once and passes them.
    def keys(self, tokens) -> "_core.ChunkKeys":
        """The request's chunk keys (whole chunks only), in the configured key
        scheme: one native pass over the tokens, counted in stats()["hash_passes"]."""
        return self._runtime.keys(_tokens(tokens))

    def keys_from_ids(self, ids: Sequence[str]) -> "_core.ChunkKeys":
        """Keys of chunks an engine names itself, one chunk (chunk_size tokens)
        per id, in order. SGLang names each page by a hash of its tokens and
        never hands lmcache the tokens; its ids are mapped into this engine's
        namespace (model, KV shape, TP shard, tenant)."""
        return self._runtime.keys_from_ids(list(ids))

    def chunk_keys(self, tokens) -> list[str]:
        """Hex names of the request's chunk keys (for tiers, tools and tests)."""
        return self._as_keys(tokens).hex()

    def _as_keys(self, request) -> "_core.ChunkKeys":
        return request if isinstance(request, _core.ChunkKeys) else self.keys(request)

    # ------------------------------------------------------------- operations
    def lookup(self, request) -> int:
        """Number of leading tokens of the request (token ids or ChunkKeys)
        that are cached in any tier (a multiple of chunk_size)."""
        start = time.perf_counter()
        hit = self._runtime.lookup(self._as_keys(request)) * self.chunk_size
        self.latencies.observe("lookup", time.perf_counter() - start)
        return hit

    def store(self, request, kv_caches: Optional[TensorOrList] = None, *, slot_mapping=None,
              block_ids: Optional[Sequence[int]] = None, layout: Optional[str] = None,
              block_size: Optional[int] = None, stream: Optional[int] = None) -> int:
        """Stores the request's whole chunks covered by the slot mapping (or
        block table); returns tokens newly stored."""
        return self.begin_store(request, kv_caches, slot_mapping=slot_mapping, block_ids=block_ids, layout=layout,
                                block_size=block_size, stream=stream).finish()

    def begin_store(self, request, kv_caches: Optional[TensorOrList] = None, *, slot_mapping=None,
                    block_ids: Optional[Sequence[int]] = None, layout: Optional[str] = None,
                    block_size: Optional[int] = None, stream: Optional[int] = None) -> "PendingStore":
        """The same store in two steps: reserves the chunks and starts the copy
        (with a GPU cache it is enqueued on `stream` and this returns at once);
        `.finish()` waits for it and publishes the chunks. The engine must not
        overwrite the slots being stored until the copy is done."""
        keys, kv, slots = self._request_args(request, kv_caches, slot_mapping, block_ids, layout, block_size,
                                             for_store=True)
        tensors = self._tensors_of(kv_caches)
        start = time.perf_counter()
        native = self._runtime.begin_store(keys, kv, slots, stream=_stream(kv, stream))
        return PendingStore(native, tensors, self.latencies, start)

    def load(self, request, kv_caches: Optional[TensorOrList] = None, *, slot_mapping=None,
             block_ids: Optional[Sequence[int]] = None, layout: Optional[str] = None,
             block_size: Optional[int] = None, stream: Optional[int] = None) -> int:
        """Loads the request's cached prefix into the slots given; returns the
        number of leading tokens now valid in the engine's cache (never more
        than the slots given; fewer if a chunk vanished since lookup)."""
        with self.begin_load(request, kv_caches, slot_mapping=slot_mapping, block_ids=block_ids, layout=layout,
                             block_size=block_size, stream=stream) as pending:
            pending.load_layers(pending.num_layers)
        return pending.tokens

    def begin_load(self, request, kv_caches: Optional[TensorOrList] = None, *, slot_mapping=None,
                   block_ids: Optional[Sequence[int]] = None, layout: Optional[str] = None,
                   block_size: Optional[int] = None, stream: Optional[int] = None) -> "PendingLoad":
        """The same load in steps, for layer-by-layer loading: returns a
        PendingLoad that holds the cached prefix (`.tokens` of them) until
        `.finish()`; `.load_layers(end)` moves the layers before `end`. With a
        GPU cache every copy is enqueued on `stream` and load_layers returns at
        once: record an event on that stream to wait for a layer."""
        keys, kv, slots = self._request_args(request, kv_caches, slot_mapping, block_ids, layout, block_size,
                                             for_store=False)
        tensors = self._tensors_of(kv_caches)
        start = time.perf_counter()
        native = self._runtime.begin_load(keys, kv, slots, stream=_stream(kv, stream))
        return PendingLoad(native, tensors, self.latencies, start)

    def pin(self, request) -> int:
        """Protects the cached chunks of a prefix from eviction; returns chunks pinned."""
        return self._runtime.pin(self._as_keys(request))

    def unpin(self, request) -> int:
        return self._runtime.unpin(self._as_keys(request))

    def clear(self, *, include_disk: bool = True) -> int:
        """Drops every cached chunk that is not in use or pinned; returns how many."""
        return self._runtime.clear(include_disk)

    # Operator calls (lmcache.control), not for an engine's hot path.
    def locate(self, request) -> dict[str, int]:
        """Leading tokens of the request that each tier holds on its own
        ({'host', 'disk', 'remote'}) and that some tier holds ('any': what a
        lookup finds), without touching anything."""
        found = self._runtime.locate(self._as_keys(request))
        return {tier: chunks * self.chunk_size for tier, chunks in found.items()}

    def prefetch(self, request) -> int:
        """Brings the request's cached prefix into host memory now (from disk
        and the remote tier); returns the leading tokens in host memory."""
        return self._runtime.prefetch(self._as_keys(request)) * self.chunk_size

    def evict(self, request, *, include_disk: bool = False) -> int:
        """Drops the request's chunks from host memory (and from disk); chunks
        in use or pinned stay. Returns the records removed."""
        return self._runtime.evict(self._as_keys(request), include_disk)

    def stats(self) -> dict[str, int]:
        s = self._runtime.stats()
        s["chunk_size"] = self.chunk_size
        return s

    def close(self) -> None:
        """Waits for calls in flight and frees the host tier. Later calls raise ClosedError."""
        if os.getpid() != self._pid:
            return  # a forked child's copy: the parent's threads, locks and directory are not its to close
        from lmcache.control.server import detach

        detach(self)
        self._runtime.close()  # lets queued writes to disk and the remote tier finish first
        if self._remote is not None:
            self._remote.close()
        with self._lock:
            self._layout, self._kv_caches = None, None

    @property
    def closed(self) -> bool:
        return self._runtime.closed

    def __enter__(self) -> "CacheEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------- helpers
    def _tensors_of(self, kv_caches):
        """The tensors a handle must keep alive while it may still copy: those
        given, or the registered ones (which a later registration may replace)."""
        if kv_caches is not None:
            return kv_caches
        with self._lock:
            return self._kv_caches

    def _resolve_layout(self, kv_caches, layout, block_size) -> _core.KVLayout:
        if kv_caches is None and (layout is not None or block_size is not None):
            raise InvalidArgumentError("layout= and block_size= describe kv_caches given in the same call; without "
                                       "them the registered caches and their layout are used")
        if kv_caches is not None:
            # Other tensors in the registered layout unless told otherwise.
            described = describe(kv_caches, layout or self._layout_name, block_size=block_size or self._block_size)
            if self._layout is None:
                self._runtime.register_layout(described)
            return described
        if self._runtime.closed:
            raise ClosedError("the lmcache engine is closed")
        if self._layout is None:
            raise InvalidArgumentError("no KV caches given and none registered (call register_kv_caches first)")
        return self._layout

    def _request_args(self, request, kv_caches, slot_mapping, block_ids, layout, block_size, *, for_store: bool):
        """The native arguments of a store or load: keys, layout, slots. Token
        ids are hashed here; for a store only the tokens the slots cover."""
        kv = self._resolve_layout(kv_caches, layout, block_size)
        if isinstance(request, _core.ChunkKeys):
            keys, num_tokens = request, len(request) * self.chunk_size
        else:
            tok = _tokens(request)
            keys, num_tokens = None, len(tok)
        slots = self._slots(kv, slot_mapping, block_ids, num_tokens)
        if keys is None:
            if len(slots) > num_tokens:
                raise InvalidArgumentError(f"more slots than tokens ({len(slots)} > {num_tokens})")
            keys = self._runtime.keys(tok[: len(slots)] if for_store else tok)
        return keys, kv, slots

    @staticmethod
    def _slots(layout: _core.KVLayout, slot_mapping, block_ids, num_tokens: int):
        if (slot_mapping is None) == (block_ids is None):
            raise InvalidArgumentError("give exactly one of slot_mapping and block_ids")
        if slot_mapping is not None:
            return _int_array(slot_mapping, np.int64, "slot_mapping")
        # Natively: every id is checked against the cache before it is multiplied.
        return slots_from_blocks(layout, _int_array(block_ids, np.int64, "block_ids"), num_tokens)


class PendingLoad:
    """A load begun by CacheEngine.begin_load: holds the cached prefix, and the
    KV tensors it writes into, until finish() (or the end of a with block)."""

    def __init__(self, native: "_core.PendingLoad", tensors, latencies: Optional[OperationLatencies] = None,
                 start: float = 0.0) -> None:
        self._native, self._tensors = native, tensors
        self._latencies, self._start = latencies, start

    @property
    def tokens(self) -> int:
        """Leading tokens the load delivers."""
        return self._native.tokens

    @property
    def num_layers(self) -> int:
        return self._native.num_layers

    @property
    def layers_done(self) -> int:
        return self._native.layers_done

    def load_layers(self, end_layer: int) -> None:
        """Moves the layers before `end_layer` (on a GPU: enqueued on the load's stream)."""
        self._native.load_layers(end_layer)

    def finish(self) -> None:
        """Waits for device copies and releases the chunks (idempotent)."""
        self._native.finish()
        self._tensors = None  # nothing writes into them any more
        if self._latencies is not None:
            self._latencies.observe("load", time.perf_counter() - self._start)
            self._latencies = None  # observed once however often finish() is called

    def __enter__(self) -> "PendingLoad":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()


class PendingStore:
    """A store begun by CacheEngine.begin_store; finish() publishes it (the
    runtime queues it for the disk and remote tiers). Holds the KV tensors it
    reads from until then."""

    def __init__(self, native: "_core.PendingStore", tensors, latencies: Optional[OperationLatencies] = None,
                 start: float = 0.0) -> None:
        self._native, self._tensors = native, tensors
        self._latencies, self._start = latencies, start

    @property
    def tokens(self) -> int:
        """Tokens the store adds once finished."""
        return self._native.tokens

    def finish(self) -> int:
        """Waits for the copy and publishes the chunks; returns the tokens stored."""
        stored = self._native.finish()
        self._tensors = None
        if self._latencies is not None:
            self._latencies.observe("store", time.perf_counter() - self._start)
            self._latencies = None
        return stored


def _stream(layout: _core.KVLayout, stream: Optional[int]) -> int:
    """The CUDA stream a copy of a GPU cache runs on: the caller's, or torch's
    current stream on that device (the call returns when the copy is done)."""
    if layout.device < 0:
        return 0
    if stream is not None:
        return stream
    import torch

    return torch.cuda.current_stream(layout.device).cuda_stream


def _int_array(values, dtype, what: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor: share its memory when on the CPU
        values = values.detach()
        if values.device.type != "cpu":
            values = values.cpu()
        values = values.numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidArgumentError(f"{what} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidArgumentError(f"{what} must hold integers, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


def _tokens(tokens):
    """Lists go straight to the native converter; arrays and tensors become contiguous int32/int64."""
    if isinstance(tokens, (list, tuple)):
        return tokens
    arr = _int_array(tokens, None, "tokens")
    if arr.dtype not in (np.int32, np.uint32, np.int64):
        arr = arr.astype(np.int64)
    return np.ascontiguousarray(arr)


def _close_at_exit(ref: "weakref.ref[CacheEngine]") -> None:
    engine = ref()
    if engine is not None and not engine.closed:
        engine.close()
