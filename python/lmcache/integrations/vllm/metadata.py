"""What the scheduler-side connector tells the worker each step (pickled across processes)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lmcache.integrations.vllm.compat import KVConnectorMetadata


@dataclass
class RequestWork:
    """Work for one request in one step.

    Tokens [0, load_until) must be valid after start_load_kv; [0, load_from)
    already are (vLLM's own prefix cache). The whole chunks of
    [store_from, store_until) are stored after the forward pass; the ones
    before store_from were stored in an earlier step, or were already cached
    when the request was first scheduled (vLLM's hit, or lmcache's load).
    token_ids: the prompt, as a uint32 array (pickled as one buffer).
    """

    req_id: str
    token_ids: np.ndarray
    block_ids: list[int]
    load_from: int = 0
    load_until: int = 0
    store_from: int = 0
    store_until: int = 0
    # Blending: [load_from, load_until) is made by the blend prefill instead
    # of a prefix load, from the segments cached at these [start, end) spans
    # (whole chunks each); and these segments get their own KV stored.
    blend_spans: list[tuple[int, int]] = field(default_factory=list)
    segment_stores: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class LMCacheConnectorMetadata(KVConnectorMetadata):
    requests: list[RequestWork] = field(default_factory=list)
    # Preempted requests that had stores: their blocks are freed at once, so
    # stores still reading them must be done before the next forward pass.
    preempted_req_ids: list[str] = field(default_factory=list)
