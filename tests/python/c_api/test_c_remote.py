"""C and Python engines share one Redis store: what a Python engine (the
Python client, lmcache.remote) stores, a C engine (the native client in
liblmcache.so) loads byte for byte, and the other way round, in every codec
both write; a value changed on the store is refused by the C engine and
deleted; values under another secret are left alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lmcache

from c_engine import CEngine, CError

L, NB, BS, H, D = 2, 16, 16, 2, 64
SECRET = "shared secret of the deployment, 32+"
TOKENS = list(range(500, 500 + 96))  # 6 chunks of 16
BLOCKS = list(range(6))


def caches(fill: bool):
    rng = np.random.default_rng(1)
    return [rng.standard_normal((2, NB, BS, H, D)).astype(np.float32) if fill
            else np.zeros((2, NB, BS, H, D), np.float32) for _ in range(L)]


def common(url, codec="none", **extra):
    return dict(chunk_size=16, l1_capacity_gb=0.02, model_id="shared-model", remote_url=url, remote_codec=codec,
                **extra)


def py_engine(url, codec="none", secret=SECRET, **extra):
    return lmcache.CacheEngine(lmcache.Config(**common(url, codec, auth_secret=secret, **extra)))


@pytest.mark.parametrize("codec", ["none", "zstd", "lz4"])
@pytest.mark.parametrize("encrypt", [False, True])
def test_python_stores_c_loads(redis_server, codec, encrypt):
    src = caches(True)
    with py_engine(redis_server.url, codec, encrypt_records=encrypt) as e:
        e.register_kv_caches([torch.from_numpy(a) for a in src])
        assert e.store(TOKENS, block_ids=BLOCKS) == len(TOKENS)
        e.flush_writes()
    dst = caches(False)
    with CEngine(dst, **common(redis_server.url, codec, auth_secret=SECRET,
                               encrypt_records=str(encrypt).lower())) as c:
        assert c.lookup(TOKENS) == len(TOKENS)
        assert c.load(TOKENS, BLOCKS) == len(TOKENS)
        assert c.stat("remote_gets") == 6 and c.stat("remote_bad_values") == 0
    for a, b in zip(src, dst):
        assert np.array_equal(a[:, :6], b[:, :6])


@pytest.mark.parametrize("codec", ["none", "zstd", "lz4"])
def test_c_stores_python_loads(redis_server, codec):
    src = caches(True)
    with CEngine(src, **common(redis_server.url, codec, auth_secret=SECRET)) as c:
        assert c.store(TOKENS, BLOCKS) == len(TOKENS)
        c.flush()
        assert c.stat("remote_puts") == 6
    dst = caches(False)
    with py_engine(redis_server.url, codec) as e:
        e.register_kv_caches([torch.from_numpy(a) for a in dst])
        assert e.lookup(TOKENS) == len(TOKENS)
        assert e.load(TOKENS, block_ids=BLOCKS) == len(TOKENS)
        assert e.stats()["remote_gets"] == 6
    for a, b in zip(src, dst):
        assert np.array_equal(a[:, :6], b[:, :6])


def test_changed_value_is_refused_by_c_and_deleted(redis_server):
    import redis

    src = caches(True)
    with py_engine(redis_server.url) as e:
        e.register_kv_caches([torch.from_numpy(a) for a in src])
        e.store(TOKENS, block_ids=BLOCKS)
        e.flush_writes()
    r = redis.Redis(port=redis_server.port)
    keys = sorted(r.keys("lmcache:*"))
    assert len(keys) == 6
    # A writer without the secret replaces one value with a forged record of the right size.
    victim = keys[0]
    value = bytearray(r.get(victim))
    value[-1] ^= 0xFF
    r.set(victim, bytes(value))
    dst = caches(False)
    with CEngine(dst, **common(redis_server.url, auth_secret=SECRET)) as c:
        c.load(TOKENS, BLOCKS)
        assert c.stat("remote_bad_values") == 1
    assert not r.exists(victim) and r.dbsize() == 5


def test_other_secret_is_a_miss_and_stays(redis_server):
    import redis

    src = caches(True)
    with CEngine(src, **common(redis_server.url, auth_secret=SECRET)) as c:
        c.store(TOKENS, BLOCKS)
        c.flush()
    dst = caches(False)
    with CEngine(dst, **common(redis_server.url, auth_secret="another deployment's secret")) as c:
        assert c.load(TOKENS, BLOCKS) == 0
        assert c.stat("remote_get_not_ours") == 1 and c.stat("remote_bad_values") == 0
    assert redis.Redis(port=redis_server.port).dbsize() == 6
    assert not any(b.any() for b in dst)


def test_c_refuses_a_remote_tier_without_a_secret(redis_server):
    with pytest.raises(CError, match="needs a secret"):
        CEngine(caches(False), **common(redis_server.url))
