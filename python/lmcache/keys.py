"""Key schemes engines use for the same tokens, so that chunks can be shared
across engines.

lmcache's own keys are an XXH3-128 chain computed natively from token ids.
SGLang names a page by a SHA-256 chain over its token ids instead, and its
storage API only ever sees those names. With ``key_scheme: sglang`` (and
chunk_size = SGLang's page size) an engine computes those names natively
from its tokens (CacheEngine.keys) and maps them into lmcache's namespace
(model, KV shape, TP shard, tenant) the same way SGLang's side does
(CacheEngine.keys_from_ids), so what one stores the other finds.
"""

from __future__ import annotations

from typing import Sequence

from lmcache import _core


def sglang_page_hashes(tokens: Sequence[int], page_size: int) -> list[str]:
    """SGLang's page hashes (sglang.srt.mem_cache.utils.get_hash_str, chained)
    for the whole pages of `tokens`: sha256(previous digest || page's token ids
    as uint32 little-endian), hex. Computed natively, as key_scheme=sglang
    does. Ids must fit in uint32 (SGLang switches to another encoding above that)."""
    return _core.sglang_page_names(tokens, page_size)
