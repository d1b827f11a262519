"""Worker-side half of the connector: owns the CacheEngine (and so the host
tier) of this worker, moves KV between vLLM's paged cache and lmcache, and
answers the scheduler's lookups.
"""

from __future__ import annotations

import atexit
import logging
import weakref
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lmcache import _core, layouts
from lmcache.config import Config
from lmcache.engine import CacheEngine
from lmcache.integrations.vllm import compat, modes
from lmcache.integrations.vllm.device_staging import DeviceStaging
from lmcache.integrations.vllm.lookup_rpc import LookupServer, socket_name
from lmcache.integrations.vllm.metadata import LMCacheConnectorMetadata, RequestWork
from lmcache.integrations.vllm.async_stores import AsyncStores
from lmcache.integrations.vllm.blend_worker import WorkerBlender
from lmcache.request_keys import RequestKeys

logger = logging.getLogger(__name__)


@dataclass
class _Loading:
    """One request's load in flight during a step."""

    work: RequestWork
    load: Any  # lmcache._core.PendingLoad
    failed: bool = False


class WorkerSide:
    def __init__(self, vllm_config: Any, config: Config) -> None:
        self.rank, self._tp_size = compat.tp_rank_and_size(vllm_config)
        self._model_id = compat.model_id(vllm_config)
        self.engine = CacheEngine(config, model_id=self._model_id, tp_rank=self.rank, tp_size=self._tp_size)
        self._blender: WorkerBlender | None = None  # enable_blending and an engine it covers
        self._engine_id = vllm_config.kv_transfer_config.engine_id
        self._block_size = vllm_config.cache_config.block_size
        self._server: LookupServer | None = None
        self._load_error_blocks: set[int] = set()
        self._bad_kv_from: dict[str, int] = {}  # this step: first token whose KV did not arrive, per request
        self._faults = None
        self._staging: DeviceStaging | None = None
        self._store_stream = None  # GPU caches: the side stream stores copy on
        self._load_stream = None  # GPU caches: the side stream loads copy on
        self._layerwise = False
        self._layer_index: dict[str, int] = {}
        self._loads: list[_Loading] = []  # this step's loads, until the end of the forward pass
        self._layer_events: list = []  # GPU, layer-wise: an event per layer on the load stream
        self._layers_waited: set[int] = set()
        self._async: AsyncStores | None = None  # async stores: published off this thread
        self._stores_copied = None  # GPU, async stores: an event after the last step's store copies
        self._closed = False
        # Each request is hashed once, at its first lookup, load or store, and
        # its keys serve the rest until vLLM reports it finished.
        self._keys = RequestKeys(self.engine)
        if config.testing.fault_load_rate > 0:
            from lmcache.faults import LoadFaultInjector

            self._faults = LoadFaultInjector(self.engine, config.testing.fault_load_rate, config.testing.fault_seed,
                                            config.testing.fault_load_max)
        # vLLM does not always shut connectors down when its worker exits;
        # closing at exit still publishes begun stores and writes queued chunks to disk.
        atexit.register(_close_at_exit, weakref.ref(self))
        self.stats = {"load_requests": 0, "loaded_tokens": 0, "load_failed_tokens": 0, "store_requests": 0,
                      "stored_tokens": 0, "layerwise_steps": 0, "layer_waits": 0,
                      "blocks_released_after_stores": 0}  # requests reported in get_finished

    def register_kv_caches(self, kv_caches: dict) -> None:
        names = compat.ordered_layer_names(kv_caches)
        layers = [kv_caches[n] for n in names]
        layout = layouts.vllm_layout_of(layers[0])
        self._layers, self._layout = layers, layout
        self._layer_index = {name: i for i, name in enumerate(names)}
        on_gpu = layers[0].device.type == "cuda"
        if not on_gpu or _core.device_backend() == "cuda":
            # The native copy engine, or on a GPU lmcache's CUDA kernels.
            self._kv_layout = self.engine.register_kv_caches(layers, layout)
            self._block_size = self._kv_layout.block_size
            self._layerwise = modes.layerwise_loads(self.engine.config, on_gpu)
            if modes.async_stores(self.engine.config, on_gpu):
                self._async = AsyncStores(self._count_stored)
            if on_gpu:
                import torch

                # Stores and loads copy on side streams: the compute stream only
                # records the event a store waits on, and waits on a load's
                # event of each layer (layer-wise) or of the whole load.
                self._store_stream = torch.cuda.Stream(layers[0].device)
                self._load_stream = torch.cuda.Stream(layers[0].device)
        else:
            # A build without CUDA on a GPU engine: torch gathers on the device, one copy through pinned memory.
            self._block_size = layers[0].shape[layouts.block_size_dim(layout)]
            self._staging = DeviceStaging(self.engine, layers, layout, self._block_size)
        self._blender = WorkerBlender.create(self.engine.config, self._model_id, kv_caches, self.rank, self._tp_size)
        # Stats over the socket add the server's own counters (refused peers, malformed frames, ...).
        self._server = LookupServer(socket_name(self._engine_id, self.rank), self.lookup,
                                    lambda: {**self.all_stats(), **self._server.stats()},
                                    lambda include_disk: self.engine.clear(include_disk=include_disk),
                                    segment_lookup=self._blender.segment_lookup if self._blender else None)
        logger.info("lmcache: registered %d layers as %s; lookups served for rank %d; disk tier: %s; "
                    "layer-wise loads: %s; async stores: %s", len(layers), layout, self.rank,
                    self.engine.disk_backend or "off", "on" if self._layerwise else "off",
                    "on" if self._async else "off")

    def lookup(self, token_ids, req_id: str = "") -> int:
        return self.engine.lookup(self._keys.get(req_id, token_ids))

    # ---------------------------------------------------------------- loads
    # Every load is a PendingLoad (the cached prefix held from start_load_kv
    # to the end of the forward pass). Whole-step mode moves all layers in
    # start_load_kv. Layer-wise mode moves layer i only for wait_for_layer_load
    # of layer i: on a GPU every layer is enqueued at once on the load stream
    # with an event after each, and the compute stream waits on layer i's
    # event just before layer i's attention, so loading layer i+1 overlaps
    # computing layer i; on the CPU the copy happens in that call.
    def start_load_kv(self, meta: LMCacheConnectorMetadata) -> None:
        self._finish_loads()  # a step that ended without wait_for_save (should not happen)
        stream = None
        if self._load_stream is not None and any(w.load_until > 0 for w in meta.requests):
            import torch

            # The blocks loaded into may have been read by earlier work on the compute stream.
            self._load_stream.wait_stream(torch.cuda.current_stream(self._load_stream.device))
            stream = self._load_stream.cuda_stream
        for work in meta.requests:
            if work.blend_spans:
                self._blend(work)
            elif work.load_until > 0:
                self._begin_load(work, stream)
        if not self._loads:
            return
        if not self._layerwise:
            self._move_layers(len(self._layers))
            self._finish_loads()
            return
        self.stats["layerwise_steps"] += 1
        if self._load_stream is not None:
            import torch

            self._layer_events = []
            for layer in range(len(self._layers)):
                self._move_layers(layer + 1)
                event = torch.cuda.Event()
                event.record(self._load_stream)
                self._layer_events.append(event)

    def wait_for_layer_load(self, layer_name: str) -> None:
        if not self._loads:
            return
        layer = self._layer_index.get(layer_name)
        if layer is None:
            return
        if self._layer_events:
            import torch

            # The compute stream, not this thread, waits for the layer's copy.
            torch.cuda.current_stream(self._load_stream.device).wait_event(self._layer_events[layer])
        else:
            self._move_layers(layer + 1)
        self._layers_waited.add(layer)
        self.stats["layer_waits"] += 1

    def _blend(self, work: RequestWork) -> None:
        """The blend prefill writes every claimed token's KV before the forward pass (all layers at once)."""
        self.stats["load_requests"] += 1
        try:
            if self._blender is None:
                raise RuntimeError("blending is off in this worker")
            self._blender.blend(work, self._slots(work.block_ids, work.load_until))
            self._count_loaded(work, work.load_until)
        except Exception as e:  # a failed blend is recomputed by vLLM, never wrong KV
            logger.warning("lmcache blend for %s failed: %s", work.req_id, e)
            if self._blender is not None:
                self._blender.stats["blend_failed_requests"] += 1
            self._not_loaded(work, work.load_from, work.load_until)

    def _begin_load(self, work: RequestWork, stream) -> None:
        self.stats["load_requests"] += 1
        slots = self._slots(work.block_ids, work.load_until)
        slots[: work.load_from] = -1  # vLLM already holds these
        try:
            keys = self._keys.get(work.req_id, work.token_ids)
        except Exception as e:  # a load that cannot start is a miss, never a crash
            logger.warning("lmcache load for %s failed: %s", work.req_id, e)
            self._not_loaded(work, work.load_from, work.load_until)
            return
        if self._faults is not None:
            self._faults.maybe_fail(keys[: work.load_until // self.engine.chunk_size])
        if self._staging is not None:  # the torch fallback: one synchronous load
            try:
                loaded = self._staging.load(keys, work.block_ids, work.load_from, work.load_until)
            except Exception as e:  # a failed load is a miss, never a crash
                logger.warning("lmcache load for %s failed: %s", work.req_id, e)
                loaded = work.load_from
            self._count_loaded(work, loaded)
            self._not_loaded(work, loaded, work.load_until)
            return
        try:
            load = self.engine.begin_load(keys, slot_mapping=slots, stream=stream)
        except Exception as e:
            logger.warning("lmcache load for %s failed: %s", work.req_id, e)
            self._not_loaded(work, work.load_from, work.load_until)
            return
        # Promised but not found (evicted or corrupt since the lookup): known now, reported now.
        self._not_loaded(work, load.tokens, work.load_until)
        if load.tokens <= work.load_from:  # nothing to move: vLLM already has the rest
            try:
                load.finish()
            except Exception as e:  # only releases references here; nothing was promised from it
                logger.warning("lmcache load for %s failed to finish: %s", work.req_id, e)
            return
        self._loads.append(_Loading(work, load))

    def _move_layers(self, end_layer: int) -> None:
        for loading in self._loads:
            if loading.failed:
                continue
            try:
                loading.load.load_layers(end_layer)
            except Exception as e:  # the whole request's load becomes a recompute
                logger.warning("lmcache load for %s failed: %s", loading.work.req_id, e)
                loading.failed = True

    def _finish_loads(self) -> None:
        """Ends the step's loads and releases what they held. A load that
        failed part way is reported so vLLM recomputes it. Layer-wise: vLLM
        calls wait_for_layer_load before every attention it runs, so a layer
        not waited for did not run this step, and its copy is finished here;
        a step with loads and no wait at all means this vLLM does not call
        it, so those loads are recomputed and later steps load whole."""
        no_waits = self._layerwise and bool(self._loads) and not self._layers_waited
        if no_waits:
            logger.warning("lmcache: vLLM ran a step without wait_for_layer_load; loading whole steps from now on")
            self._layerwise = False
        for loading in self._loads:
            work, load = loading.work, loading.load
            try:
                if not loading.failed:
                    load.load_layers(len(self._layers))  # layers not waited for (CPU), if any
                load.finish()
            except Exception as e:
                logger.warning("lmcache load for %s failed: %s", work.req_id, e)
                loading.failed = True
            if loading.failed or no_waits:
                self._not_loaded(work, work.load_from, min(load.tokens, work.load_until))
            else:
                self._count_loaded(work, load.tokens)
        self._loads, self._layer_events, self._layers_waited = [], [], set()

    def _count_loaded(self, work: RequestWork, loaded: int) -> None:
        self.stats["loaded_tokens"] += max(0, min(loaded, work.load_until) - work.load_from)

    def _not_loaded(self, work: RequestWork, start: int, end: int) -> None:
        """Tokens [start, end) of what was promised did not arrive: name their
        blocks so vLLM recomputes them."""
        start = max(start, work.load_from)
        if start >= end:
            return
        bad_blocks = work.block_ids[start // self._block_size : (end - 1) // self._block_size + 1]
        self._load_error_blocks.update(bad_blocks)
        # This step's store must not save these blocks, nor what was computed on top of them.
        self._bad_kv_from[work.req_id] = min(start, self._bad_kv_from.get(work.req_id, start))
        if self._faults is not None:
            self._poison(bad_blocks)
        self.stats["load_failed_tokens"] += end - start

    def _poison(self, block_ids: list[int]) -> None:
        """Fault-injection runs only: fills blocks whose load failed with NaN, so
        a test would see garbage if vLLM used them instead of recomputing."""
        index = [slice(None)] * layouts.block_dim(self._layout) + [block_ids]
        for t in self._layers:
            t[tuple(index)] = float("nan")

    def take_load_error_blocks(self) -> set[int]:
        errors, self._load_error_blocks = self._load_error_blocks, set()
        return errors

    # ---------------------------------------------------------------- stores
    # After the forward pass. Synchronous mode stores here. Asynchronous mode
    # (async_store) only begins each store here: on a GPU its copy is enqueued
    # on the store stream, which waits on an event of the compute stream, and
    # a finisher thread publishes the chunks once the copy is done; neither
    # the compute stream nor this thread waits for it. The blocks being read
    # stay the request's: vLLM frees a finished request's blocks only once
    # get_finished reports its stores done (the scheduler side asked vLLM to
    # wait, see request_finished), and a preempted request's blocks, freed at
    # once, are fenced in handle_preemptions before the next forward pass.
    def wait_for_save(self, meta: LMCacheConnectorMetadata) -> None:
        self._finish_loads()  # the forward pass is enqueued: every layer it needed was waited for
        stream = None
        if self._store_stream is not None and any(w.store_until > 0 for w in meta.requests):
            import torch

            self._store_stream.wait_stream(torch.cuda.current_stream(self._store_stream.device))
            stream = self._store_stream.cuda_stream
        begun = False
        bad_kv_from, self._bad_kv_from = self._bad_kv_from, {}
        for work in meta.requests:
            if work.store_until <= 0:
                continue
            self.stats["store_requests"] += 1
            if self._async is not None:
                self._async.expect(work.req_id)  # as the scheduler side does, whatever happens next
            if work.req_id in bad_kv_from:  # vLLM recomputes from there; store only what is sound
                cs = self.engine.chunk_size
                work = replace(work, store_until=min(work.store_until, bad_kv_from[work.req_id] // cs * cs))
                if work.store_until <= work.store_from:
                    continue
            try:
                keys = self._keys.get(work.req_id, work.token_ids)
                first, end = work.store_from // self.engine.chunk_size, work.store_until // self.engine.chunk_size
                if self._staging is not None:  # gathers from the first block: stores every chunk before `end`
                    self._count_stored(self._staging.store(keys[:end], work.block_ids, work.store_until))
                    continue
                # Only the chunks not stored before: their keys, and the slots of their tokens.
                keys = keys[first:end]
                slots = self._slots(work.block_ids, work.store_until)[work.store_from:]
                if self._async is not None:
                    self._async.submit(work.req_id, self.engine.begin_store(keys, slot_mapping=slots, stream=stream))
                    begun = True
                else:
                    self._count_stored(self.engine.store(keys, slot_mapping=slots, stream=stream))
            except Exception as e:  # a failed store only costs a future hit
                logger.warning("lmcache store for %s failed: %s", work.req_id, e)
        if self._blender is not None:
            for work in meta.requests:
                if work.segment_stores:
                    try:
                        self._blender.store_segments(work)
                    except Exception as e:  # a failed store only costs a future hit
                        logger.warning("lmcache segment store for %s failed: %s", work.req_id, e)
        if begun and stream is not None:
            import torch

            self._stores_copied = torch.cuda.Event()
            self._stores_copied.record(self._store_stream)

    def get_finished(self, finished_req_ids: set[str]) -> set[str] | None:
        """Finished requests whose stores are all done: vLLM may free their blocks."""
        self._keys.forget(finished_req_ids)
        if self._async is None:
            return None
        done = self._async.finished(finished_req_ids)
        self.stats["blocks_released_after_stores"] += len(done or ())
        return done

    def handle_preemptions(self, meta: LMCacheConnectorMetadata) -> None:
        """Before the forward pass that may reuse a preempted request's blocks."""
        if self._stores_copied is not None and meta.preempted_req_ids:
            self._stores_copied.synchronize()  # rare: the store copies of the last step are done
            self._stores_copied = None

    def _count_stored(self, tokens: int) -> None:
        self.stats["stored_tokens"] += tokens  # also from the finisher thread: one writer per mode

    def flush_stores(self) -> None:
        """Blocks until every begun store is published (tests, shutdown)."""
        if self._async is not None:
            self._async.drain()

    # ---------------------------------------------------------------- helpers
    def _slots(self, block_ids: list[int], num_tokens: int) -> np.ndarray:
        return layouts.slots_from_blocks(self._kv_layout, block_ids, num_tokens)

    def all_stats(self) -> dict:
        self.flush_stores()  # stats count what the steps so far stored
        s = dict(self.engine.stats())
        s.update({"connector_" + k: v for k, v in self.stats.items()})
        s["connector_requests_holding_blocks"] = self._async.holding() if self._async is not None else 0
        if self._blender is not None:
            s.update(self._blender.all_stats())
        return s

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._finish_loads()
        if self._async is not None:
            self._async.close()  # publishes what is queued first
        if self._server is not None:
            self._server.close()
        if self._blender is not None:
            self._blender.close()
        self.engine.close()


def _close_at_exit(ref: "weakref.ref[WorkerSide]") -> None:
    worker = ref()
    if worker is not None:
        try:
            worker.close()
        except Exception as e:  # the process is going away; say why the cache may be incomplete
            logger.warning("lmcache: closing at exit failed: %s", e)
