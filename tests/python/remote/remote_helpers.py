"""Engines with a remote tier for the tests in this folder.

The engine is built without a remote URL and then given a RemoteStore made
here, so each test picks the record key (the secret) and the store options
itself."""

from __future__ import annotations

import numpy as np
import torch

import lmcache
from lmcache.remote import RemoteTls, make_remote_tier
from lmcache.remote.store import RemoteStore

L, NB, BS, H, D = 2, 32, 16, 2, 64
KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))


def cache(fill=True, blocks=NB):
    make = torch.randn if fill else torch.zeros
    return [make(2, blocks, BS, H, D) for _ in range(L)]


def engine(url, *, record_key=KEY_A, encrypt=False, codec="none", timeout_s=1.0, tls=None, queue_chunks=64,
           tier=None, **config):
    """A CacheEngine whose remote tier is `url` (or `tier`), sealed under `record_key`."""
    config.setdefault("chunk_size", 32)
    config.setdefault("l1_capacity_gb", 0.02)
    e = lmcache.CacheEngine(lmcache.Config(**config), model_id="remote-test")
    try:
        tier = tier or make_remote_tier(url, timeout_s=timeout_s, tls=tls or RemoteTls())
        e._remote = RemoteStore(e._runtime, tier, codec=codec, queue_chunks=queue_chunks, record_key=record_key,
                                encrypt=encrypt)
    except BaseException:
        e.close()
        raise
    return e


def toks(seed, n=128):
    return np.random.default_rng(seed).integers(0, 30000, size=n).tolist()


def store_and_flush(e, src, t, blocks):
    e.register_kv_caches(src)
    assert e.store(t, block_ids=blocks) == len(t)
    e.flush_writes()


def load_into_fresh(url, t, blocks=NB, **kw):
    """A second engine (empty host memory) loads `t` through the remote store."""
    dst = cache(fill=False, blocks=blocks)
    with engine(url, **kw) as e:
        e.register_kv_caches(dst)
        hit = e.lookup(t)
        n = e.load(t, block_ids=list(range(len(t) // BS)))
        return hit, n, dst, e.stats()


def same_blocks(src, dst, src_blocks, n_blocks):
    return all(torch.equal(a[:, src_blocks[:n_blocks]], b[:, :n_blocks]) for a, b in zip(src, dst))


def zero_blocks(dst, first, last):
    """True when blocks [first, last) of the destination cache were never written."""
    return all(bool((t[:, first:last] == 0).all()) for t in dst)
