"""Scheduler side of blending: where a prompt's segments are, which of them
the workers hold, and what to claim from vLLM.

vLLM lets a connector claim only a prefix: tokens [num_computed, N) whose KV
the worker must write before the forward pass. A blended request claims up
to the end of its last cached segment; the worker's blend prefill makes the
KV of every claimed token, the text between segments included, and vLLM
computes the rest (typically the question). A request whose cached segments
add nothing to what a prefix load gives is served as a prefix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from lmcache.blend.segments import spans_from_offsets, split_at_separator
from lmcache.config import Config

logger = logging.getLogger(__name__)

OFFSETS_PARAM = "lmcache_segment_offsets"  # kv_transfer_params key: where a request's segments start


@dataclass
class BlendPlan:
    spans: list[tuple[int, int]] = field(default_factory=list)  # cached parts of segments, to blend
    claim_until: int = 0  # > 0: tokens [0, claim_until) are made by the blend prefill
    segment_stores: list[tuple[int, int]] = field(default_factory=list)  # segments with uncached whole chunks


class BlendPlanner:
    def __init__(self, config: Config, lookup_segment, prefix_caching: bool) -> None:
        self.chunk_size = config.chunk_size
        self._separator = config.blend.separator_ids()
        self._lookup_segment = lookup_segment
        self.enabled = config.blend.enable_blending
        if self.enabled and prefix_caching:
            # vLLM would hand the approximate blocks of a blended prompt to a
            # later prompt that shares their tokens, as if they were exact.
            logger.warning("lmcache: enable_blending needs vLLM's prefix caching off (enable_prefix_caching=False); "
                           "serving prefixes only")
            self.enabled = False
        self.stats = {"blend_requests": 0, "blend_claimed_tokens": 0, "segment_lookups": 0}

    def plan(self, request: Any, num_computed: int, prefix_hit: int) -> Optional[BlendPlan]:
        """None when blending does not apply to this request."""
        if not self.enabled:
            return None
        prompt = np.asarray(request.prompt_token_ids, dtype=np.int64)
        segments = self._segments(request, len(prompt))
        if not segments:
            return None
        plan = BlendPlan()
        for start, end in segments:
            whole = (end - start) // self.chunk_size * self.chunk_size
            if whole == 0:
                continue  # shorter than a chunk: computed with the prompt
            self.stats["segment_lookups"] += 1
            hit = min(self._lookup_segment(prompt[start:end]), whole)
            if hit > 0:
                plan.spans.append((start, start + hit))
            if hit < whole:
                plan.segment_stores.append((start, end))
        # vLLM must compute the last token itself; blending starts at position 0
        # (with prefix caching off vLLM never holds any of the prompt already).
        last = len(prompt) - 1
        plan.spans = [(s, s + (min(e, last) - s) // self.chunk_size * self.chunk_size) for s, e in plan.spans]
        plan.spans = [(s, e) for s, e in plan.spans if e > s]
        end = max((e for _, e in plan.spans), default=0)
        if num_computed == 0 and end > prefix_hit:
            plan.claim_until = end
            self.stats["blend_requests"] += 1
            self.stats["blend_claimed_tokens"] += end
        else:
            plan.spans = []
        return plan

    def _segments(self, request: Any, prompt_len: int) -> list[tuple[int, int]]:
        params = getattr(request, "kv_transfer_params", None) or {}
        offsets = params.get(OFFSETS_PARAM) if isinstance(params, dict) else None
        if offsets is not None:
            try:
                return spans_from_offsets(offsets, prompt_len)
            except (TypeError, ValueError) as e:
                logger.warning("lmcache: request %s: %s; serving it as a prefix", request.request_id, e)
                return []
        if self._separator:
            segments = split_at_separator(request.prompt_token_ids, self._separator)
            if segments != [(0, prompt_len)]:  # no separator in it: a plain prompt, served as a prefix
                return segments
        return []
