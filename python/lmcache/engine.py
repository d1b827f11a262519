"""CacheEngine: the Python face of the native runtime.

Knows tiers and keys, nothing of engines: adapters (lmcache.integrations)
turn an engine's objects into the neutral calls below. Every call does its
work in one native call with the GIL released.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Optional, Sequence

import numpy as np

from lmcache import _core
from lmcache.config import Config
from lmcache.errors import ClosedError, ConfigError, InvalidArgumentError, InvalidStateError
from lmcache.layouts import TensorOrList, describe
from lmcache.record_key import record_key

_GIB = 1 << 30


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
    ) -> None:
        self.config = config if config is not None else Config.load()
        if model_id and not self.config.model_id:
            self.config = self.config.replace(model_id=model_id)
        key = record_key(self.config)  # None: the disk tier keeps a key of its own
        self._pid = os.getpid()
        self._runtime = _core.Runtime(
            chunk_size=self.config.chunk_size,
            l1_capacity_bytes=int(self.config.l1_capacity_gb * _GIB),
            num_threads=self.config.num_copy_threads,
            eviction_policy=self.config.eviction_policy,
            model_id=self.config.model_id,
            tenant_salt=self.config.tenant_salt,
            tp_rank=tp_rank,
            tp_size=tp_size,
            verify_l1_checksums=self.config.verify_l1_checksums,
            record_key=key or b"",
            encrypt_records=self.config.encrypt_records,
            **self._disk_options(tp_rank, tp_size),
        )
        self._remote = None
        if self.config.remote_url:
            from lmcache.remote import RemoteTls, make_remote_tier
            from lmcache.remote.store import RemoteStore

            c = self.config
            tls = RemoteTls(c.remote_tls_ca_file, c.remote_tls_cert_file, c.remote_tls_key_file)
            tier = make_remote_tier(c.remote_url, timeout_s=c.remote_timeout_s, tls=tls)
            self._remote = RemoteStore(self._runtime, tier, codec=self.config.remote_codec,
                                       queue_chunks=self.config.remote_queue_chunks, record_key=key,
                                       encrypt=self.config.encrypt_records)
        self._lock = threading.Lock()
        self._layout: Optional[_core.KVLayout] = None
        self._layout_name = "vllm_flash_attn"
        self._block_size: Optional[int] = None
        self._kv_caches: Any = None  # keeps the registered tensors (and so their memory) alive

    def _disk_options(self, tp_rank: int, tp_size: int) -> dict:
        c = self.config
        if not c.local_disk_path:
            return {}
        path = c.local_disk_path
        if tp_size > 1:  # each shard owns its own directory (and lock)
            path = os.path.join(path, f"tp{tp_rank}-of-{tp_size}")
        try:
            # Private from the start (the native tier refuses a directory others can write to).
            os.makedirs(c.local_disk_path, mode=0o700, exist_ok=True)
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"config key 'local_disk_path': cannot use {path!r} as a directory: {e.strerror}") from None
        return {
            "disk_dir": path,
            "disk_capacity_bytes": int(c.disk_capacity_gb * _GIB),
            "disk_force_threads": c.disk_io_backend == "threads",
            "disk_queue_depth": c.disk_queue_depth,
            "write_behind_chunks": c.write_behind_chunks,
            "disk_lock_timeout_s": c.disk_lock_timeout_s,
        }

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
        if self._remote is not None:
            self._remote.flush()

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

    # ------------------------------------------------------------- operations
    def lookup(self, tokens) -> int:
        """Number of leading tokens of `tokens` that are cached (a multiple of chunk_size)."""
        tok = _tokens(tokens)
        hit = self._runtime.lookup(tok)
        if self._remote is not None and hit + self.chunk_size <= len(tok):
            # The local tiers' prefix ended: ask the remote store how far it goes on.
            keys = self._runtime.hash_tokens(tok)
            hit += self._remote.count_prefix(keys[hit // self.chunk_size:]) * self.chunk_size
        return hit

    def store(
        self,
        tokens,
        kv_caches: Optional[TensorOrList] = None,
        *,
        slot_mapping=None,
        block_ids: Optional[Sequence[int]] = None,
        layout: Optional[str] = None,
        block_size: Optional[int] = None,
        stream: Optional[int] = None,
    ) -> int:
        """Stores the whole chunks of `tokens` covered by the slot mapping; returns tokens newly stored."""
        return self.begin_store(tokens, kv_caches, slot_mapping=slot_mapping, block_ids=block_ids, layout=layout,
                                block_size=block_size, stream=stream).finish()

    def begin_store(
        self,
        tokens,
        kv_caches: Optional[TensorOrList] = None,
        *,
        slot_mapping=None,
        block_ids: Optional[Sequence[int]] = None,
        layout: Optional[str] = None,
        block_size: Optional[int] = None,
        stream: Optional[int] = None,
    ) -> "PendingStore":
        """The same store in two steps: reserves the chunks and starts the copy
        (with a GPU cache it is enqueued on `stream` and this returns at once);
        `.finish()` waits for it and publishes the chunks. The engine must not
        overwrite the slots being stored until the copy is done."""
        tok, kv, slots = self._token_args(tokens, kv_caches, slot_mapping, block_ids, layout, block_size)
        tensors = self._tensors_of(kv_caches)
        native = self._runtime.begin_store(tok, kv, slots, stream=_stream(kv, stream))
        remote_keys = (lambda: self._runtime.hash_tokens(tok[: len(slots)])) if self._remote is not None else None
        return PendingStore(native, self._remote, remote_keys, tensors)

    def load(
        self,
        tokens,
        kv_caches: Optional[TensorOrList] = None,
        *,
        slot_mapping=None,
        block_ids: Optional[Sequence[int]] = None,
        layout: Optional[str] = None,
        block_size: Optional[int] = None,
        stream: Optional[int] = None,
    ) -> int:
        """Loads the cached prefix of `tokens` into the slots given; returns the
        number of leading tokens now valid in the engine's cache (never more
        than the slots given; fewer if a chunk vanished since lookup)."""
        tok, kv, slots = self._token_args(tokens, kv_caches, slot_mapping, block_ids, layout, block_size)
        if self._remote is not None:
            self._fetch_remote_part(tok, len(slots))
        return self._runtime.load(tok, kv, slots, stream=_stream(kv, stream))

    def begin_load(
        self,
        tokens,
        kv_caches: Optional[TensorOrList] = None,
        *,
        slot_mapping=None,
        block_ids: Optional[Sequence[int]] = None,
        layout: Optional[str] = None,
        block_size: Optional[int] = None,
        stream: Optional[int] = None,
    ) -> "PendingLoad":
        """The same load in steps, for layer-by-layer loading: returns a
        PendingLoad that holds the cached prefix (`.tokens` of them) until
        `.finish()`; `.load_layers(end)` moves the layers before `end`. With a
        GPU cache every copy is enqueued on `stream` and load_layers returns at
        once: record an event on that stream to wait for a layer."""
        tok, kv, slots = self._token_args(tokens, kv_caches, slot_mapping, block_ids, layout, block_size)
        tensors = self._tensors_of(kv_caches)
        if self._remote is not None:
            self._fetch_remote_part(tok, len(slots))
        return PendingLoad(self._runtime.begin_load(tok, kv, slots, stream=_stream(kv, stream)), tensors)

    def _fetch_remote_part(self, tok, num_slots: int) -> None:
        """Brings the chunks of the wanted prefix that only the remote store has into host memory."""
        cs = self.chunk_size
        wanted = min(len(tok) // cs, -(-num_slots // cs))
        if self._runtime.lookup(tok) // cs < wanted:
            self._remote.fetch_into_runtime(self._runtime.hash_tokens(tok), wanted)

    # ------------------------------------------------------------- chunks named by the engine
    # SGLang names each page by a hash of its tokens and never hands lmcache
    # the tokens; these calls take such ids (one chunk = chunk_size tokens
    # per id, in order) and map them into this engine's key namespace.
    def lookup_ids(self, ids: Sequence[str]) -> int:
        """Number of leading ids whose chunks are cached (any tier)."""
        keys = self._runtime.keys_from_ids(list(ids))
        hit = self._runtime.lookup_keys(keys)
        if self._remote is not None and hit < len(keys):
            hit += self._remote.count_prefix(keys[hit:])
        return hit

    def store_ids(self, ids: Sequence[str], kv_caches: Optional[TensorOrList] = None, *, slot_mapping,
                  layout: Optional[str] = None, block_size: Optional[int] = None,
                  stream: Optional[int] = None) -> int:
        """Stores one chunk per id from slot_mapping (len(ids) * chunk_size slots); returns tokens newly stored."""
        return self.begin_store_ids(ids, kv_caches, slot_mapping=slot_mapping, layout=layout, block_size=block_size,
                                    stream=stream).finish()

    def begin_store_ids(self, ids: Sequence[str], kv_caches: Optional[TensorOrList] = None, *, slot_mapping,
                        layout: Optional[str] = None, block_size: Optional[int] = None,
                        stream: Optional[int] = None) -> "PendingStore":
        """store_ids in two steps (see begin_store)."""
        keys = self._runtime.keys_from_ids(list(ids))
        kv = self._resolve_layout(kv_caches, layout, block_size)
        tensors = self._tensors_of(kv_caches)
        native = self._runtime.begin_store_keys(keys, kv, _int_array(slot_mapping, np.int64, "slot_mapping"),
                                                stream=_stream(kv, stream))
        return PendingStore(native, self._remote, lambda: keys, tensors)

    def load_ids(self, ids: Sequence[str], kv_caches: Optional[TensorOrList] = None, *, slot_mapping,
                 layout: Optional[str] = None, block_size: Optional[int] = None,
                 stream: Optional[int] = None) -> int:
        """Loads the cached leading chunks of `ids`; returns tokens now valid (a prefix of the slots)."""
        keys = self._runtime.keys_from_ids(list(ids))
        kv = self._resolve_layout(kv_caches, layout, block_size)
        slots = _int_array(slot_mapping, np.int64, "slot_mapping")
        self._fetch_remote_keys(keys, len(slots))
        return self._runtime.load_keys(keys, kv, slots, stream=_stream(kv, stream))

    def begin_load_ids(self, ids: Sequence[str], kv_caches: Optional[TensorOrList] = None, *, slot_mapping,
                       layout: Optional[str] = None, block_size: Optional[int] = None,
                       stream: Optional[int] = None) -> "PendingLoad":
        """load_ids in steps (see begin_load)."""
        keys = self._runtime.keys_from_ids(list(ids))
        kv = self._resolve_layout(kv_caches, layout, block_size)
        tensors = self._tensors_of(kv_caches)
        slots = _int_array(slot_mapping, np.int64, "slot_mapping")
        self._fetch_remote_keys(keys, len(slots))
        return PendingLoad(self._runtime.begin_load_keys(keys, kv, slots, stream=_stream(kv, stream)), tensors)

    def _fetch_remote_keys(self, keys: list, num_slots: int) -> None:
        if self._remote is not None:
            self._remote.fetch_into_runtime(keys, min(len(keys), -(-num_slots // self.chunk_size)))

    def pin(self, tokens) -> int:
        """Protects the cached chunks of a prefix from eviction; returns chunks pinned."""
        return self._runtime.pin(_tokens(tokens))

    def unpin(self, tokens) -> int:
        return self._runtime.unpin(_tokens(tokens))

    def chunk_keys(self, tokens) -> list[str]:
        """Hex keys of the whole chunks of `tokens` (for tiers, tools and tests)."""
        return self._runtime.hash_tokens(_tokens(tokens))

    def clear(self, *, include_disk: bool = True) -> int:
        """Drops every cached chunk that is not in use or pinned; returns how many."""
        return self._runtime.clear(include_disk)

    def stats(self) -> dict[str, int]:
        s = self._runtime.stats()
        s["chunk_size"] = self.chunk_size
        if self._remote is not None:
            s.update(self._remote.snapshot())
        return s

    def close(self) -> None:
        """Waits for calls in flight and frees the host tier. Later calls raise ClosedError."""
        if os.getpid() != self._pid:
            return  # a forked child's copy: the parent's threads, locks and directory are not its to close
        if self._remote is not None:
            self._remote.close()  # finishes queued writes first: they read host memory
        self._runtime.close()
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

    def _token_args(self, tokens, kv_caches, slot_mapping, block_ids, layout, block_size):
        """The native arguments of a token-addressed store or load: tokens, layout, slots."""
        tok = _tokens(tokens)
        kv = self._resolve_layout(kv_caches, layout, block_size)
        return tok, kv, self._slots(kv, slot_mapping, block_ids, len(tok))

    @staticmethod
    def _slots(layout: _core.KVLayout, slot_mapping, block_ids, num_tokens: int):
        if (slot_mapping is None) == (block_ids is None):
            raise InvalidArgumentError("give exactly one of slot_mapping and block_ids")
        if slot_mapping is not None:
            return _int_array(slot_mapping, np.int64, "slot_mapping")
        # Natively: every id is checked against the cache before it is multiplied.
        return _core.slots_from_blocks(layout, _int_array(block_ids, np.int64, "block_ids"), num_tokens)


class PendingLoad:
    """A load begun by CacheEngine.begin_load: holds the cached prefix, and the
    KV tensors it writes into, until finish() (or the end of a with block)."""

    def __init__(self, native: "_core.PendingLoad", tensors) -> None:
        self._native, self._tensors = native, tensors

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

    def __enter__(self) -> "PendingLoad":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()


class PendingStore:
    """A store begun by CacheEngine.begin_store; finish() publishes it (and
    queues it for the remote tier). Holds the KV tensors it reads from until then."""

    def __init__(self, native: "_core.PendingStore", remote, remote_keys, tensors) -> None:
        self._native, self._remote, self._remote_keys = native, remote, remote_keys
        self._tensors = tensors
        self._done = False

    @property
    def tokens(self) -> int:
        """Tokens the store adds once finished."""
        return self._native.tokens

    def finish(self) -> int:
        """Waits for the copy and publishes the chunks; returns the tokens stored."""
        stored = self._native.finish()
        self._tensors = None
        if not self._done:
            self._done = True
            if self._remote is not None and stored:
                self._remote.enqueue(self._remote_keys())
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
