"""Scheduler-side half of the connector: decides what each request loads and
stores, and tells the workers through LMCacheConnectorMetadata. Moves no data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from lmcache.config import Config
from lmcache.integrations.vllm import compat, modes
from lmcache.integrations.vllm.blend_planner import BlendPlan, BlendPlanner
from lmcache.integrations.vllm.lookup_rpc import LookupClient
from lmcache.integrations.vllm.metadata import LMCacheConnectorMetadata, RequestWork

logger = logging.getLogger(__name__)


@dataclass
class _Tracked:
    token_ids: np.ndarray  # uint32: pickled to the workers as one buffer
    block_ids: list[int] = field(default_factory=list)
    # Whole chunks below this are cached already: handed to the workers to
    # store in an earlier step, or computed before the request's first step
    # (vLLM's own prefix cache, which lmcache filled when vLLM first computed
    # them, or lmcache's load). The workers are never sent them again, so a
    # prompt that vLLM's cache covers costs no store work and no token transfer.
    stored_until: int = 0
    load_from: int = 0
    load_until: int = 0  # > 0: a load promised to vLLM and not yet sent to the workers


class SchedulerSide:
    def __init__(self, vllm_config: Any, config: Config, *, sees_connector_output: bool = True) -> None:
        # sees_connector_output: vLLM passes the workers' output back
        # (update_connector_output); its LMCacheConnectorV1 wrapper does not.
        self._sees_output = sees_connector_output
        self.chunk_size = config.chunk_size
        _, tp_size = compat.tp_rank_and_size(vllm_config)
        engine_id = vllm_config.kv_transfer_config.engine_id
        self._client = LookupClient(engine_id, range(tp_size), timeout_s=config.vllm.lookup_timeout_s)
        self._blend = BlendPlanner(config, self._client.lookup_segment, vllm_config.cache_config.enable_prefix_caching)
        self._requests: dict[str, _Tracked] = {}
        self._lookups: dict[str, tuple[int, int]] = {}  # req_id -> (num_computed, tokens to load)
        self._plans: dict[str, BlendPlan] = {}  # req_id -> its blend plan, until its first step
        # Asynchronous stores: a finished request that had stores keeps its
        # blocks until the workers report its stores done (get_finished).
        self._async_stores = modes.async_stores(config, vllm_config.device_config.device_type == "cuda")
        self._stored_reqs: set[str] = set()
        self._held_for_stores: set[str] = set()  # finished, blocks held until the workers report
        self.stats = {"lookups": 0, "lookup_tokens": 0, "hit_tokens": 0, "promised_tokens": 0}

    # ---------------------------------------------------------------- vLLM hooks
    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> tuple[int, bool]:
        prompt = request.prompt_token_ids
        if prompt is None:
            return 0, False
        # lmcache holds whole chunks; if vLLM's own prefix cache already covers
        # every token lmcache could add, skip the round trip to the workers.
        most = min(len(prompt) // self.chunk_size * self.chunk_size, request.num_tokens - 1)
        if most <= num_computed_tokens:
            return 0, False
        hit = self._client.lookup(prompt, request.request_id)
        self.stats["lookups"] += 1
        self.stats["lookup_tokens"] += len(prompt)
        self.stats["hit_tokens"] += hit
        plan = self._blend.plan(request, num_computed_tokens, min(hit, request.num_tokens - 1))
        if plan is not None:
            self._plans[request.request_id] = plan
            if plan.claim_until:  # the blend prefill makes [0, claim_until)
                hit = plan.claim_until
        # vLLM must compute at least one token itself, so never claim the last one.
        loadable = min(hit, request.num_tokens - 1) - num_computed_tokens
        if loadable <= 0:
            return 0, False
        self._lookups[request.request_id] = (num_computed_tokens, loadable)
        self.stats["promised_tokens"] += loadable
        return loadable, False

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        looked_up = self._lookups.pop(request.request_id, None)
        if num_external_tokens <= 0 or looked_up is None:
            return
        num_computed, _ = looked_up
        tracked = self._track(request.request_id, request.prompt_token_ids)
        if blocks is not None:  # None from vLLM's LMCacheConnectorV1: the step's scheduler output has them
            tracked.block_ids = compat.first_group_block_ids(blocks.get_block_ids())
        tracked.load_from = num_computed
        tracked.load_until = num_computed + num_external_tokens

    def build_connector_meta(self, scheduler_output: Any) -> LMCacheConnectorMetadata:
        meta = LMCacheConnectorMetadata()
        scheduled = scheduler_output.num_scheduled_tokens
        for new in scheduler_output.scheduled_new_reqs:
            if new.prompt_token_ids is None:
                continue
            tracked = self._track(new.req_id, new.prompt_token_ids)
            tracked.block_ids = compat.first_group_block_ids(new.block_ids)
            cs = self.chunk_size
            tracked.stored_until = max(tracked.stored_until, new.num_computed_tokens // cs * cs)
            self._add_work(meta, new.req_id, tracked, new.num_computed_tokens + scheduled.get(new.req_id, 0))
        cached = scheduler_output.scheduled_cached_reqs
        resumed = getattr(cached, "resumed_req_ids", set())
        for i, req_id in enumerate(cached.req_ids):
            tracked = self._requests.get(req_id)
            if tracked is None:
                continue
            new_blocks = cached.new_block_ids[i]
            if new_blocks is not None:
                ids = compat.first_group_block_ids(new_blocks)
                tracked.block_ids = ids if req_id in resumed else tracked.block_ids + ids
            self._add_work(meta, req_id, tracked, cached.num_computed_tokens[i] + scheduled.get(req_id, 0))
        if self._async_stores:
            # Every preempted request, not only those with stores: one may have
            # been aborted since, and its freed blocks are just as reusable.
            meta.preempted_req_ids = sorted(getattr(scheduler_output, "preempted_req_ids", None) or ())
        return meta

    def request_finished(self, request: Any, block_ids: list[int]) -> tuple[bool, Optional[dict]]:
        self._requests.pop(request.request_id, None)
        self._lookups.pop(request.request_id, None)
        self._plans.pop(request.request_id, None)
        if request.request_id in self._stored_reqs:
            self._stored_reqs.discard(request.request_id)
            # The workers saw the same stores and report this request in
            # get_finished once they are done; vLLM frees the blocks then.
            if self._sees_output:  # else nothing would ever tell us they came back
                self._held_for_stores.add(request.request_id)
            return True, None
        return False, None  # synchronous stores (or none): vLLM may free the blocks now

    def update_connector_output(self, connector_output: Any) -> None:
        for req_id in getattr(connector_output, "finished_sending", None) or ():
            self._held_for_stores.discard(req_id)

    def has_pending_block_frees(self) -> bool:
        # Blocks held for stores come back within a step or two: vLLM may wait
        # for them instead of preempting a running request.
        return bool(self._held_for_stores)

    def close(self) -> None:
        self._client.close()

    # ---------------------------------------------------------------- helpers
    def _track(self, req_id: str, token_ids) -> _Tracked:
        tracked = self._requests.get(req_id)
        if tracked is None:
            tracked = self._requests[req_id] = _Tracked(token_ids=np.asarray(token_ids, dtype=np.uint32))
        return tracked

    def _add_work(self, meta: LMCacheConnectorMetadata, req_id: str, tracked: _Tracked, computed_after: int) -> None:
        plan = self._plans.pop(req_id, None)  # sent with the request's first step only
        blend_spans = plan.spans if plan is not None and tracked.load_until > 0 else []
        if blend_spans:
            # Blended KV is approximate: never stored as the exact KV of a prefix.
            tracked.stored_until = len(tracked.token_ids)
        segment_stores = plan.segment_stores if plan is not None else []
        # Store the prompt's whole chunks whose KV exists once this step has run.
        store_until = min(computed_after, len(tracked.token_ids)) // self.chunk_size * self.chunk_size
        do_store = store_until > tracked.stored_until
        do_load = tracked.load_until > 0
        if not (do_store or do_load or segment_stores):
            return
        meta.requests.append(
            RequestWork(
                req_id=req_id,
                token_ids=tracked.token_ids,
                block_ids=list(tracked.block_ids),
                load_from=tracked.load_from,
                load_until=tracked.load_until,
                store_from=tracked.stored_until if do_store else 0,
                store_until=store_until if do_store else 0,
                blend_spans=blend_spans,
                segment_stores=segment_stores,
            )
        )
        if do_store:
            tracked.stored_until = store_until
            if self._async_stores:
                self._stored_reqs.add(req_id)
        tracked.load_from = tracked.load_until = 0
