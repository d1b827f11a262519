"""Segment KV in lmcache's tiers, and a blended prefill that reads and fills them.

A segment's KV is computed with the segment alone at position 0, so it is
exactly the KV of a prompt made of that segment: it is stored under the chunk
keys of the segment's tokens (the model's namespace, not the segment's
offset), in whole chunks, through the same CacheEngine as prefixes. Host
memory, disk and the remote tier, their checksums, seals and eviction all
apply unchanged, and a segment cached here is found wherever it comes back.
A segment's tail shorter than a chunk is not cached: it is computed with the
prompt, like the text between segments.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
from torch import nn

from lmcache.blend.core import SegmentKV
from lmcache.blend.segments import spans_from_offsets, split_at_separator
from lmcache.engine import CacheEngine
from lmcache.request_keys import RequestKeys

if TYPE_CHECKING:
    from lmcache.blend.hf import BlendOutput

logger = logging.getLogger(__name__)

_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


class SegmentCache:
    """Stores and loads segment KV (per layer (keys, values), each
    [kv_heads, tokens, head_dim], keys rotated for position 0) in an engine."""

    def __init__(self, engine: CacheEngine, model: nn.Module) -> None:
        cfg = model.config
        self.num_layers = cfg.num_hidden_layers
        self.num_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.dtype = next(model.parameters()).dtype
        if self.dtype not in _DTYPES:
            raise ValueError(f"segment KV in {self.dtype} cannot be cached; use float32, float16 or bfloat16")
        self.engine = engine
        # A segment is looked up, loaded and stored by many prompts: hashed once.
        self._keys = RequestKeys(engine)
        engine.set_kv_shape(num_layers=self.num_layers, num_heads=self.num_heads, head_dim=self.head_dim,
                            dtype=_DTYPES[self.dtype])

    @property
    def chunk_size(self) -> int:
        return self.engine.chunk_size

    def cached_tokens(self, token_ids: Sequence[int]) -> int:
        """Leading tokens of the segment cached in any tier (whole chunks)."""
        return self.engine.lookup(self._keys.of_content(_ids(token_ids)))

    def store(self, token_ids: Sequence[int], kv: SegmentKV) -> int:
        """Stores the segment's whole chunks; returns tokens newly stored."""
        ids = _ids(token_ids)
        n = len(ids) // self.chunk_size * self.chunk_size
        if n == 0:
            return 0
        buf = self._buffer(n)
        for layer, (k, v) in enumerate(kv):
            buf[0, layer] = _token_major(k)[:n]
            buf[1, layer] = _token_major(v)[:n]
        keys = self._keys.of_content(ids)[: n // self.chunk_size]
        return self.engine.store(keys, buf, slot_mapping=np.arange(n, dtype=np.int64), layout="dense",
                                 block_size=self.chunk_size)

    def load(self, token_ids: Sequence[int], num_tokens: int) -> Optional[list[tuple[torch.Tensor, torch.Tensor]]]:
        """The KV of the segment's first `num_tokens` tokens (whole chunks), or
        None if they are no longer all cached (evicted or refused as corrupt
        since the lookup): then the segment is computed with the prompt."""
        ids = _ids(token_ids)
        if num_tokens <= 0 or num_tokens % self.chunk_size or num_tokens > len(ids):
            raise ValueError(f"a segment loads whole chunks of {self.chunk_size} tokens, not {num_tokens}")
        buf = self._buffer(num_tokens)
        keys = self._keys.of_content(ids)[: num_tokens // self.chunk_size]
        loaded = self.engine.load(keys, buf, slot_mapping=np.arange(num_tokens, dtype=np.int64),
                                  layout="dense", block_size=self.chunk_size)
        if loaded < num_tokens:
            return None
        return [(buf[0, layer].transpose(0, 1), buf[1, layer].transpose(0, 1)) for layer in range(self.num_layers)]

    def _buffer(self, n: int) -> torch.Tensor:
        return torch.empty(2, self.num_layers, n, self.num_heads, self.head_dim, dtype=self.dtype)


def blend_prefill_cached(
    model: nn.Module,
    cache: SegmentCache,
    input_ids: Sequence[int] | torch.Tensor,
    *,
    separator: Optional[Sequence[int]] = None,
    offsets: Optional[Sequence[int]] = None,
    recompute_share: float = 0.15,
    check_layer: int = 1,
    store_missing: bool = True,
) -> "BlendOutput":
    """Prefills `input_ids` reusing every cached segment, wherever it stands.

    The prompt is split into segments at `separator` (a token sequence) or at
    `offsets` (where each segment starts). Each segment's cached whole chunks
    are loaded and blended (blend_prefill); the rest of the prompt is computed.
    With `store_missing`, segments that were not cached get their standalone
    KV computed and stored, for the next prompt that contains them.
    A prompt with no cached segment is an ordinary prefill.
    """
    from lmcache.blend.hf import blend_prefill, segment_kv  # transformers: only for this entry point

    ids = _ids(input_ids)
    if (separator is None) == (offsets is None):
        raise ValueError("give exactly one of separator= and offsets= to say where the segments are")
    if separator is not None:
        segments = split_at_separator(ids, separator)
        if len(segments) == 1:
            logger.warning("the segment separator %s does not occur in the prompt: it is one segment, which "
                           "reuses only what a prefix would", list(separator))
    else:
        segments = spans_from_offsets(offsets, len(ids))

    spans: list[tuple[int, int]] = []
    loaded: dict[bytes, list] = {}
    missing: list[tuple[int, int]] = []
    for start, end in segments:
        seg = ids[start:end]
        hit = cache.cached_tokens(seg)
        kv = cache.load(seg, hit) if hit else None
        if kv is None:
            missing.append((start, end))
            continue
        spans.append((start, start + hit))
        loaded[seg[:hit].tobytes()] = kv
        if hit < end - start:
            missing.append((start, end))  # its tail: stored only if it adds whole chunks
    too_short = [e - s for s, e in segments if e - s < cache.chunk_size]
    if too_short and not spans:
        logger.info("segments of %s tokens are shorter than a chunk (%d): computed with the prompt, not cached",
                    too_short, cache.chunk_size)

    def cached_kv(segment_ids: torch.Tensor) -> SegmentKV:
        return loaded[np.asarray(segment_ids.cpu(), dtype=np.int64).tobytes()]

    out = blend_prefill(model, torch.as_tensor(ids), spans, cached_kv, recompute_share=recompute_share,
                        check_layer=check_layer)
    if store_missing:
        for start, end in missing:
            seg = ids[start:end]
            if len(seg) // cache.chunk_size * cache.chunk_size > cache.cached_tokens(seg):
                cache.store(seg, segment_kv(model, torch.as_tensor(seg)))
    return out


def _ids(token_ids) -> np.ndarray:
    if isinstance(token_ids, torch.Tensor):
        token_ids = token_ids.detach().cpu().reshape(-1).numpy()
    return np.ascontiguousarray(token_ids, dtype=np.int64).reshape(-1)


def _token_major(t: torch.Tensor) -> torch.Tensor:
    """[kv_heads, tokens, head_dim] (or [1, ...]) -> [tokens, kv_heads, head_dim]."""
    if t.dim() == 4:
        t = t[0]
    return t.transpose(0, 1)
