"""The Redis/Valkey remote tier against real redis-server processes:
round trips (single server, cluster), sharing between engines, every fault
as a miss, tenant isolation, codecs, no secrets in messages."""

import logging
import time

import pytest
from remote_helpers import BS, KEY_A, NB, cache, engine, load_into_fresh, same_blocks, store_and_flush, toks

import lmcache
from lmcache.remote import make_remote_tier, wire
from lmcache.remote.redis_tier import redact

pytest.importorskip("redis")


@pytest.mark.parametrize("codec", ["none", "zstd", "lz4"])
def test_single_server_round_trip_between_engines(redis_server, codec):
    src, t, blocks = cache(), toks(1), list(range(8, 16))
    with engine(redis_server.url, codec=codec) as a:
        store_and_flush(a, src, t, blocks)
        assert a.stats()["remote_puts"] == 4
    hit, n, dst, s = load_into_fresh(redis_server.url, t, codec=codec)
    assert hit == 128 and n == 128 and s["imported_chunks"] == 4
    assert same_blocks(src, dst, blocks, 8)  # lossless: byte-identical


def test_cluster_round_trip_spreads_keys(redis_cluster):
    src = cache()
    with engine(redis_cluster.url) as a:
        a.register_kv_caches(src)
        for d in range(4):
            a.store(toks(10 + d), block_ids=list(range(8 * d % NB, 8 * d % NB + 8)))
        a.flush_writes()
        assert a.stats()["remote_puts"] == 16
    per_node = [int(s.cli("dbsize").strip() or 0) for s in redis_cluster.servers]
    assert sum(per_node) == 16 and all(n > 0 for n in per_node)  # spread over the shards
    t = toks(12)
    hit, n, dst, _ = load_into_fresh(redis_cluster.url, t)
    assert hit == n == 128 and same_blocks(src, dst, list(range(16, 24)), 8)


def test_server_never_started_is_a_miss():
    url = "redis://127.0.0.1:1"  # nothing listens there
    src, t = cache(), toks(2)
    with engine(url, timeout_s=0.3) as e:
        e.register_kv_caches(src)
        assert e.store(t, block_ids=list(range(8))) == 128  # host memory still works
        e.flush_writes()
        assert e.lookup(toks(3)) == 0
        s = e.stats()
        assert s["remote_errors"] >= 2 and s["remote_put_dropped"] >= 4


def test_killed_restarted_reconnects(redis_server):
    src, t1, t2 = cache(), toks(4), toks(5)
    with engine(redis_server.url, timeout_s=0.5) as e:
        e.register_kv_caches(src)
        store_and_flush(e, src, t1, list(range(8)))
        redis_server.kill()
        e.clear()
        assert e.lookup(t1) == 0  # server gone: a miss, no exception
        assert e.store(t2, block_ids=list(range(8, 16))) == 128
        e.flush_writes()
        errors = e.stats()["remote_errors"]
        assert errors >= 2
        redis_server.start()  # empty after restart (no persistence)
        e.clear()
        e.store(t2, block_ids=list(range(8, 16)))
        e.store(t1, block_ids=list(range(8)))  # put before the restart: the server lost it
        e.flush_writes()
        assert e.stats()["remote_puts"] == 12  # reconnected by itself, and t1 went again
    hit, n, dst, _ = load_into_fresh(redis_server.url, t2)
    assert hit == n == 128 and same_blocks(src, dst, list(range(8, 16)), 8)


def test_slow_server_times_out_as_a_miss(redis_server):
    src, t = cache(), toks(6)
    with engine(redis_server.url, timeout_s=0.3) as e:
        store_and_flush(e, src, t, list(range(8)))
        e.clear()
        redis_server.cli("client", "pause", "1500", "ALL")  # the server stalls every client for 1.5 s
        t0 = time.monotonic()
        assert e.lookup(t) == 0
        assert time.monotonic() - t0 < 1.0  # the timeout, not the server's pause
        time.sleep(1.6)
        assert e.stats()["remote_exists_errors"] >= 1
        assert e.lookup(t) == 128  # and it recovers


@pytest.mark.parametrize("damage", ["short", "long", "flipped", "foreign"])
def test_bad_values_are_never_loaded(redis_server, damage):
    import redis

    src, t = cache(), toks(7)
    with engine(redis_server.url) as a:
        store_and_flush(a, src, t, list(range(8)))
        keys = a.chunk_keys(t)
    r = redis.Redis(port=redis_server.port)
    k = "lmcache:" + keys[2]
    v = r.get(k)
    bad = {"short": v[: len(v) // 2], "long": v + b"\0" * 4096,
           "flipped": v[:5000] + bytes([v[5000] ^ 1]) + v[5001:], "foreign": b"hello"}[damage]
    r.set(k, bad)
    hit, n, dst, s = load_into_fresh(redis_server.url, t)
    assert hit == 128  # EXISTS cannot tell; the load finds out
    assert n == 64  # chunks 0 and 1 only
    assert same_blocks(src, dst, list(range(8)), 4)
    assert s["remote_bad_values"] == 1
    assert r.get(k) is None  # deleted: nobody is offered it again


def test_corrupt_record_inside_a_valid_wire_value(redis_server):
    """A value whose wire checksum holds but whose record is wrong (a buggy writer)."""
    import redis

    src, t = cache(), toks(8)
    with engine(redis_server.url) as a:
        store_and_flush(a, src, t, list(range(8)))
        keys = a.chunk_keys(t)
        record = bytearray(a._runtime.export_record(keys[1]))
    record[1000] ^= 0xFF
    value = wire.encode(bytes(record), "none", chunk_key=keys[1], key=wire.RecordKey(KEY_A))
    redis.Redis(port=redis_server.port).set("lmcache:" + keys[1], value)
    hit, n, _, s = load_into_fresh(redis_server.url, t)
    assert n == 32 and s["load_errors"] == 1


def test_server_side_eviction_is_survived():
    from redis_servers import RedisServer

    server = RedisServer("--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru")
    try:
        src = cache()
        with engine(server.url) as a:
            a.register_kv_caches(src)
            for d in range(12):  # 48 chunks of 64 KiB: 3 MiB for 2 MiB of server memory
                a.store(toks(100 + d), block_ids=list(range(8 * (d % 4), 8 * (d % 4) + 8)))
            a.flush_writes()
        for d in range(12):
            hit, n, dst, s = load_into_fresh(server.url, toks(100 + d))
            assert n <= hit and s["load_errors"] == 0 and s["remote_bad_values"] == 0
            blocks = list(range(8 * (d % 4), 8 * (d % 4) + 8))
            assert same_blocks(src, dst, blocks, n // BS)
    finally:
        server.stop()


def test_tenants_never_see_each_other(redis_server):
    src, t = cache(), toks(9)
    with engine(redis_server.url, tenant_salt="acme") as a:
        store_and_flush(a, src, t, list(range(8)))
    assert load_into_fresh(redis_server.url, t, tenant_salt="globex")[0] == 0
    assert load_into_fresh(redis_server.url, t)[0] == 0  # no salt is a tenant too
    assert load_into_fresh(redis_server.url, t, tenant_salt="acme")[0] == 128


def test_password_never_in_logs_or_errors(caplog):
    from redis_servers import RedisServer

    server = RedisServer(password="s3cr3t-pw")
    try:
        caplog.set_level(logging.DEBUG)
        bad = f"redis://:wrong-pw-123@127.0.0.1:{server.port}"
        with engine(bad, timeout_s=0.3) as e:
            e.register_kv_caches(cache())
            e.store(toks(1), block_ids=list(range(8)))
            e.flush_writes()
            assert e.lookup(toks(1)) == 128  # host memory
            assert e.stats()["remote_errors"] >= 1
            e.clear()
            e.lookup(toks(1))
        text = caplog.text
        assert "wrong-pw-123" not in text and "s3cr3t-pw" not in text
        assert "***" in redact(bad) and "wrong-pw-123" not in redact(bad)
        with engine(server.url) as ok:  # the right password works
            ok.register_kv_caches(cache())
            ok.store(toks(2), block_ids=list(range(8)))
            ok.flush_writes()
            assert ok.stats()["remote_puts"] == 4
    finally:
        server.stop()


def test_fp8_codec_is_lossy_but_close(redis_server):
    src, t = cache(), toks(11)
    with engine(redis_server.url, codec="fp8") as a:
        store_and_flush(a, src, t, list(range(8)))
        s = a.stats()
        ratio = s["remote_put_bytes"] / s["remote_put_record_bytes"]
    assert ratio < 0.3  # float32 -> e4m3 plus scales
    hit, n, dst, _ = load_into_fresh(redis_server.url, t, codec="fp8")
    assert n == 128
    for a, b in zip(src, dst):
        ref = a[:, :8]
        err = (b[:, :8] - ref).abs().max() / ref.abs().max()
        assert 0 < err < 0.07  # e4m3 keeps 3 mantissa bits


def test_bad_urls_are_config_errors():
    with pytest.raises(lmcache.ConfigError, match="remote_url"):
        make_remote_tier("memcached://127.0.0.1:11211", timeout_s=1)
    with pytest.raises(lmcache.ConfigError, match="port"):
        make_remote_tier("redis://127.0.0.1:notaport", timeout_s=1)
