"""Local limits are local misses, not data loss; memory stays bounded.

- a value this machine cannot take (host memory full of pinned chunks, a
  codec module not installed) is kept on the shared store;
- compression bombs are refused before they are decompressed, with the
  process's peak memory bounded;
- a long remote prefix is fetched in bounded GET batches, never more than host
  memory holds for the load;
- flush() never hangs, also when close() races the store path."""

import subprocess
import sys
import textwrap
import threading

import pytest
from remote_helpers import cache, engine, load_into_fresh, same_blocks, store_and_flush, toks, zero_blocks

import lmcache
from lmcache.remote.redis_tier import RedisTier

redis = pytest.importorskip("redis")

SLAB = 69632  # a 65,600-byte record (chunk of 32 tokens of the test shape) in a 4 KiB-aligned slab


def l1_of(chunks):
    """l1_capacity_gb for host memory of exactly `chunks` records."""
    return chunks * SLAB / 2**30


def test_no_room_keeps_the_value(redis_server):
    src, t = cache(), toks(41)
    with engine(redis_server.url) as a:
        store_and_flush(a, src, t, list(range(8)))
        keys = a.chunk_keys(t)
    with engine(redis_server.url, l1_capacity_gb=l1_of(4)) as b:
        b.register_kv_caches(cache())
        own = toks(42)
        assert b.store(own, block_ids=list(range(8, 16))) == 128
        assert b.pin(own) == 4  # host memory: 4 slabs, all pinned
        assert b.lookup(t) == 128
        assert b.load(t, block_ids=list(range(8))) == 0
        s = b.stats()
    assert s["remote_get_no_room"] == 1 and s["remote_bad_values"] == 0
    r = redis.Redis(port=redis_server.port)
    assert all(r.exists("lmcache:" + k) for k in keys)  # shared data survives a local shortage
    hit, n, dst, _ = load_into_fresh(redis_server.url, t)
    assert n == 128 and same_blocks(src, dst, list(range(8)), 8)


def test_missing_codec_module_keeps_the_value(redis_server, monkeypatch):
    src, t = cache(), toks(43)
    with engine(redis_server.url, codec="lz4") as a:
        store_and_flush(a, src, t, list(range(8)))
        keys = a.chunk_keys(t)
    with monkeypatch.context() as m:  # this machine has no lz4 module
        m.setitem(sys.modules, "lz4", None)
        m.setitem(sys.modules, "lz4.frame", None)
        hit, n, dst, s = load_into_fresh(redis_server.url, t)
    assert hit == 128 and n == 0 and zero_blocks(dst, 0, 8)
    assert s["remote_get_codec_unavailable"] == 1 and s["remote_bad_values"] == 0
    r = redis.Redis(port=redis_server.port)
    assert all(r.exists("lmcache:" + k) for k in keys)
    hit, n, dst, _ = load_into_fresh(redis_server.url, t)  # a machine with lz4 still loads it
    assert n == 128 and same_blocks(src, dst, list(range(8)), 8)


_BOMB = textwrap.dedent("""
    import resource, sys
    import zstandard, lz4.frame
    from lmcache.remote import wire

    kind, record_bytes = sys.argv[1], 65600
    big, step = 512 << 20, bytes(1 << 20)
    if kind.startswith("zstd"):  # 512 MiB of zeros in a few KiB, built in steps (the builder stays small)
        c = zstandard.ZstdCompressor(level=1, write_content_size=kind == "zstd_declared")
        obj = c.compressobj(size=big if kind == "zstd_declared" else -1)
        body = b"".join([obj.compress(step) for _ in range(big >> 20)] + [obj.flush()])
        codec = "zstd"
    else:  # lz4: either declares 512 MiB, or says it holds one record and holds 512 MiB (no end mark:
        c = lz4.frame.LZ4FrameCompressor()  # the compressor itself refuses to end a frame that lies)
        head = c.begin(source_size=big if kind == "lz4_declared" else record_bytes)
        blocks = [c.compress(step) for _ in range(big >> 20)]
        body = b"".join([head] + blocks + ([c.flush()] if kind == "lz4_declared" else []))
        codec = "lz4"
    key = wire.RecordKey(bytes(32))
    # Sealed with the right key: the worst case, a value written by a holder of the secret.
    value = bytes(wire.seal_body(body, wire.CODECS[codec], record_bytes, chunk_key="k", key=key, encrypt=False))
    del body
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        wire.decode(value, chunk_key="k", expected_record_bytes=record_bytes, key=key)
        print("ACCEPTED")
    except wire.WireError as e:
        print("REFUSED", e)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print("value", len(value), "peak_growth_kib", grown)
""")


@pytest.mark.parametrize("kind", ["zstd_declared", "zstd_undeclared", "lz4_declared", "lz4_lying"])
def test_compression_bombs_are_refused_with_bounded_memory(kind):
    out = subprocess.run([sys.executable, "-c", _BOMB, kind], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split("\n")
    assert lines[0].startswith("REFUSED"), out.stdout
    grown_kib = int(lines[1].split()[-1])
    assert grown_kib < 32 * 1024, out.stdout  # the bomb holds 512 MiB


class CountingTier(RedisTier):
    """The real Redis tier, remembering how many keys each GET pipeline asked for."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.get_batches = []

    def get(self, keys):
        self.get_batches.append(len(keys))
        return super().get(keys)


def _store_long_prompt(url, chunks):
    src, t = cache(blocks=2 * chunks), toks(44, 32 * chunks)
    with engine(url) as a:
        store_and_flush(a, src, t, list(range(2 * chunks)))
        assert a.stats()["remote_puts"] == chunks
    return src, t


@pytest.mark.parametrize("chunks, loaded", [(12, 12), (24, 16)])
def test_long_remote_prefix_is_fetched_in_bounded_batches(redis_server, chunks, loaded):
    """Host memory of 16 records: GETs of at most a quarter of it (4 records), and never
    more than 16 records for one load (more would evict the load's first chunks)."""
    src, t = _store_long_prompt(redis_server.url, chunks)
    tier = CountingTier(redis_server.url, timeout_s=1)
    dst = cache(fill=False, blocks=2 * chunks)
    with engine(redis_server.url, tier=tier, l1_capacity_gb=l1_of(16)) as b:
        b.register_kv_caches(dst)
        assert b.lookup(t) == 32 * chunks
        n = b.load(t, block_ids=list(range(2 * chunks)))
        s = b.stats()
    assert n == 32 * loaded
    assert same_blocks(src, dst, list(range(2 * chunks)), 2 * loaded) and zero_blocks(dst, 2 * loaded, 2 * chunks)
    assert tier.get_batches == [4] * (loaded // 4)
    assert s["remote_get_batches"] == loaded // 4 and s["remote_get_beyond_l1"] == chunks - loaded


def test_a_load_fetches_no_more_than_host_memory_holds_with_its_local_prefix(redis_server):
    src, t = _store_long_prompt(redis_server.url, 20)
    dst = cache(fill=False, blocks=40)
    with engine(redis_server.url, l1_capacity_gb=l1_of(16)) as b:
        b.register_kv_caches(src)
        assert b.store(t[:4 * 32], block_ids=list(range(8))) == 128  # the first 4 chunks are local
        b.register_kv_caches(dst)
        # The runtime fetches 12 (4 local + 12: all host memory holds) and loads those 16.
        assert b.load(t, block_ids=list(range(40))) == 16 * 32
        s = b.stats()
        assert s["remote_fetched_chunks"] == 12 and s["remote_get_beyond_l1"] == 4
    assert same_blocks(src, dst, list(range(32)), 32)


def _finishes(fn) -> bool:
    """Runs fn in a thread; True when it returned (a hang shows as False after a minute)."""
    th = threading.Thread(target=fn, daemon=True)
    th.start()
    th.join(60)
    return not th.is_alive()


def test_closing_with_queued_writes_writes_them_first(redis_server):
    src = cache()
    e = engine(redis_server.url)
    e.register_kv_caches(src)
    for i in range(4):
        e.store(toks(50 + i), block_ids=list(range(8)))
    assert _finishes(e.close)  # the runtime's writer finishes the queue before the runtime closes
    assert _finishes(e.flush_writes)  # and a flush after close returns at once
    with engine(redis_server.url) as b:
        b.register_kv_caches(cache(fill=False))
        assert all(b.lookup(toks(50 + i)) == 128 for i in range(4))


def test_flush_never_hangs_when_close_races_the_store_path(redis_server):
    src = cache()
    for rnd in range(5):
        e = engine(redis_server.url)
        e.register_kv_caches(src)
        stores = [e.begin_store(toks(100 * rnd + i), block_ids=list(range(8))) for i in range(4)]
        closer = threading.Thread(target=e.close)
        closer.start()
        for p in stores:  # finishing a store queues its chunks, racing close()
            try:
                p.finish()
            except lmcache.ClosedError:
                pass
        assert _finishes(e.flush_writes)
        closer.join(60)
        assert not closer.is_alive()
        assert _finishes(e.flush_writes)
