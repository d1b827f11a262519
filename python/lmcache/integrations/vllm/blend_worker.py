"""Worker side of blending: segment KV in a cache of its own, the blend
prefill written into vLLM's blocks, and the standalone KV of new segments.

Segment KV is kept by a second CacheEngine in the "dense" layout (token-major,
like the KV the model's modules produce), with blend_l1_capacity_gb of host
memory; the disk tier (a "segments" directory under local_disk_path) and the
remote tier work as for prefixes. It is a separate engine because the
engine's own caches may store blocks in an arrangement of their own (vLLM's
CPU backend does), so the two kinds of record never share a namespace.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np
import torch

from lmcache.blend.core import blend_layers, place_cached
from lmcache.blend.segment_cache import SegmentCache
from lmcache.config import Config
from lmcache.engine import CacheEngine
from lmcache.integrations.vllm.blend_model import BlendUnsupported, PagedKVWriter, VllmLayerOps, find_model
from lmcache.integrations.vllm.metadata import RequestWork

logger = logging.getLogger(__name__)


class WorkerBlender:
    def __init__(self, config: Config, model_id: str, kv_caches: dict, tp_rank: int, tp_size: int) -> None:
        self._config = config.blend
        model = find_model(list(kv_caches))
        self.ops = VllmLayerOps(model, tp_size)  # raises BlendUnsupported with the reason
        self._writer = PagedKVWriter(model, kv_caches)
        seg_config = config.replace(
            l1_capacity_gb=config.blend.blend_l1_capacity_gb,
            local_disk_path=os.path.join(config.local_disk_path, "segments") if config.local_disk_path else "")
        segment_engine = CacheEngine(seg_config, model_id=model_id, tp_rank=tp_rank, tp_size=tp_size, name="segments")
        self.segments = SegmentCache(segment_engine, model)
        self.stats = {"blended_requests": 0, "blended_tokens": 0, "blend_recomputed_tokens": 0,
                      "blend_failed_requests": 0, "segments_stored": 0}

    @staticmethod
    def create(config: Config, model_id: str, kv_caches: dict, tp_rank: int, tp_size: int
               ) -> Optional["WorkerBlender"]:
        """A blender, or None (said once, with the reason) where this engine cannot blend."""
        if not config.blend.enable_blending:
            return None
        try:
            return WorkerBlender(config, model_id, kv_caches, tp_rank, tp_size)
        except BlendUnsupported as e:
            logger.warning("lmcache: blending is off for this engine: %s; serving prefixes only", e)
            return None

    def segment_lookup(self, tokens: np.ndarray) -> int:
        return self.segments.cached_tokens(tokens)

    @torch.no_grad()
    def blend(self, work: RequestWork, slots: np.ndarray) -> None:
        """Writes KV for tokens [load_from, load_until) into vLLM's blocks. A
        segment no longer cached is computed instead (exact, only slower)."""
        ids = np.asarray(work.token_ids[: work.load_until], dtype=np.int64)
        kv_of: dict[bytes, list] = {}
        spans = []
        for start, end in work.blend_spans:
            kv = self.segments.load(ids[start:end], end - start)
            if kv is not None:
                spans.append((start, end))
                kv_of[ids[start:end].tobytes()] = kv
        ids_t = torch.from_numpy(ids)
        cached_k, cached_v, is_cached = place_cached(
            self.ops, ids_t, spans, lambda seg: kv_of[np.asarray(seg, dtype=np.int64).tobytes()])
        out = blend_layers(self.ops, ids_t, cached_k, cached_v, is_cached, self._config.blend_recompute_share,
                           min(self._config.blend_check_layer, self.ops.num_layers - 1))
        lo, hi = work.load_from, work.load_until
        slot_t = torch.from_numpy(np.ascontiguousarray(slots[lo:hi], dtype=np.int64))
        for layer in range(self.ops.num_layers):
            self._writer.write(layer, out.keys[layer][:, lo:hi], out.values[layer][:, lo:hi], slot_t)
        self.stats["blended_requests"] += 1
        self.stats["blended_tokens"] += hi - lo
        self.stats["blend_recomputed_tokens"] += int(out.active.numel())

    @torch.no_grad()
    def store_segments(self, work: RequestWork) -> None:
        """Computes and stores the standalone KV of the request's segments that
        were not cached whole (each as if it stood alone at position 0)."""
        tokens = np.asarray(work.token_ids, dtype=np.int64)
        for start, end in work.segment_stores:
            seg = tokens[start:end]
            if self.segments.cached_tokens(seg) >= len(seg) // self.segments.chunk_size * self.segments.chunk_size:
                continue  # stored meanwhile (by another request with the same segment)
            ids = torch.from_numpy(seg)
            out = blend_layers(self.ops, ids, [], [], torch.zeros(len(seg), dtype=torch.bool), 1.0,
                               self.ops.num_layers)  # no cached KV: every layer over every position
            self.segments.store(seg, list(zip(out.keys, out.values)))
            self.stats["segments_stored"] += 1

    def all_stats(self) -> dict:
        s = {"segment_" + k: v for k, v in self.segments.engine.stats().items()}
        s.update(self.stats)
        return s

    def close(self) -> None:
        self.segments.engine.close()
