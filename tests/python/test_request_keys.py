"""Keys kept per request (the vLLM worker) and per content (blending's
segments): one hash pass each, and never the keys of other tokens."""

import numpy as np
from kv_helpers import flash_attn_cache

from lmcache.request_keys import RequestKeys


def test_keys_are_kept_per_request_and_only_for_the_same_tokens(make_engine):
    engine = make_engine()
    engine.register_kv_caches(flash_attn_cache())
    keys = RequestKeys(engine, limit=2)
    a = list(range(100, 164))
    first = keys.get("r1", a)
    assert keys.get("r1", list(a)) == first and engine.stats()["hash_passes"] == 1
    # The same id with another prompt (same length, same ends) gets its own keys.
    b = a[:10] + [7] + a[11:]
    assert keys.get("r1", b) != first and keys.get("r1", b) == engine.keys(b)
    keys.forget({"r1"})
    assert len(keys) == 0
    for rid in ("x", "y", "z"):  # bounded: the oldest go first
        keys.get(rid, a)
    assert len(keys) == 2
    assert keys.get("", a) == first  # no id: hashed, not kept
    assert len(keys) == 2


def test_content_keys_are_hashed_once_and_only_ever_for_the_same_tokens(make_engine):
    engine = make_engine()
    engine.register_kv_caches(flash_attn_cache())
    keys = RequestKeys(engine)
    a = list(range(100, 164))
    first = keys.of_content(a)
    assert keys.of_content(list(a)) == first and engine.stats()["hash_passes"] == 1
    # Another text whose (length, checksum) was made to collide with a's: the
    # kept tokens differ, so it is hashed for itself, never served a's keys.
    b = a[:10] + [7] + a[11:]
    (name, entry), = keys._entries.items()
    keys._entries[name] = (entry[0], entry[1], np.asarray(b, dtype=np.uint32))
    assert keys.of_content(a) == engine.keys(a) and engine.stats()["hash_passes"] == 3
