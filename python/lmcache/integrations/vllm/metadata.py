"""What the scheduler-side connector tells the worker each step (pickled across processes)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmcache.integrations.vllm.compat import KVConnectorMetadata


@dataclass
class RequestWork:
    """Work for one request in one step.

    Tokens [0, load_until) must be valid after start_load_kv; [0, load_from)
    already are (vLLM's own prefix cache). Whole chunks of [0, store_until)
    are stored after the forward pass.
    """

    req_id: str
    token_ids: list[int]
    block_ids: list[int]
    load_from: int = 0
    load_until: int = 0
    store_until: int = 0


@dataclass
class LMCacheConnectorMetadata(KVConnectorMetadata):
    requests: list[RequestWork] = field(default_factory=list)
    # Preempted requests that had stores: their blocks are freed at once, so
    # stores still reading them must be done before the next forward pass.
    preempted_req_ids: list[str] = field(default_factory=list)
