"""Key schemes engines use for the same tokens, so that chunks can be shared
across engines.

lmcache's own keys are an XXH3-128 chain computed natively from token ids.
SGLang names a page by a SHA-256 chain over its token ids instead, and its
storage API only ever sees those names. An engine that wants to share chunks
with SGLang computes SGLang's page names from its tokens (this module) and
uses CacheEngine.*_ids with chunk_size = SGLang's page size; the names are
then mapped into lmcache's namespace (model, KV shape, TP shard, tenant) the
same way on both sides.
"""

from __future__ import annotations

import hashlib
from typing import Optional, Sequence

import numpy as np


def sglang_page_hashes(tokens: Sequence[int], page_size: int, prior_hash: Optional[str] = None) -> list[str]:
    """SGLang's page hashes (sglang.srt.mem_cache.utils.get_hash_str, chained)
    for the whole pages of `tokens`: sha256(previous digest || page's token ids
    as uint32 little-endian), hex. Ids must fit in uint32 (SGLang switches to
    another encoding above that)."""
    arr = np.asarray(tokens, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > 0xFFFFFFFF):
        raise ValueError("token ids must be in [0, 2^32) for SGLang's page hash")
    raw = arr.astype("<u4").tobytes()
    step = 4 * page_size
    out: list[str] = []
    prev = bytes.fromhex(prior_hash) if prior_hash else b""
    for start in range(0, len(arr) // page_size * step, step):  # one hashlib call per page
        h = hashlib.sha256(prev)
        h.update(raw[start:start + step])
        prev = h.digest()
        out.append(h.hexdigest())
    return out
