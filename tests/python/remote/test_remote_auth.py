"""Authentic records on the shared store: every value is sealed (AES-GCM) under
the record key, so a second tenant with write access to the same Redis cannot
make the first load its bytes; optional encryption keeps the payload off the
wire and out of the server's memory."""

import logging
import struct

import pytest
from remote_helpers import KEY_A, KEY_B, cache, engine, load_into_fresh, same_blocks, store_and_flush, toks, \
    zero_blocks

from lmcache import _core
from lmcache.remote import wire

redis = pytest.importorskip("redis")

ACME = dict(tenant_salt="acme")


def stored_by_acme(url, t, src, **kw):
    """Tenant A stores the 4 chunks of `t` (blocks 0-7) on the remote store; returns their chunk keys."""
    with engine(url, **ACME, **kw) as a:
        store_and_flush(a, src, t, list(range(8)))
        assert a.stats()["remote_puts"] == 4
        return a.chunk_keys(t)


def attacker_payload(record: bytes) -> bytes:
    """The review's attack: keep the record header, write our own payload (all 1.0)
    and give it the right payload checksum with the public function."""
    rh = wire.RECORD_HEADER_BYTES
    payload = struct.pack("<f", 1.0) * ((len(record) - rh) // 4)
    layers = struct.unpack_from("<I", record, 8)[0]  # num_layers in the record header
    header = bytearray(record[:rh])
    struct.pack_into("<Q", header, 32, _core.payload_checksum(payload, layers))
    return bytes(header) + payload


def test_tenant_rewriting_a_payload_is_refused(redis_server):
    src, t = cache(), toks(21)
    keys = stored_by_acme(redis_server.url, t, src)
    r = redis.Redis(port=redis_server.port)
    # Tenant B sees every key on the shared server, without A's salt or secret.
    assert len(r.keys("lmcache:*")) == 4
    victim = "lmcache:" + keys[2]
    value = r.get(victim)
    forged = attacker_payload(value[wire.HEADER_BYTES:])
    r.set(victim, value[:wire.HEADER_BYTES] + forged)
    hit, n, dst, s = load_into_fresh(redis_server.url, t, **ACME)
    assert hit == 128  # EXISTS cannot tell; the load finds out
    assert n == 64 and same_blocks(src, dst, list(range(8)), 4)  # chunks 0 and 1
    assert zero_blocks(dst, 4, 8)  # the attacker's values never reached the KV cache
    assert s["remote_bad_values"] == 1 and s["imported_chunks"] == 2
    assert r.get(victim) is None  # a proven forgery is deleted


@pytest.mark.parametrize("forgery", ["sealed_with_other_secret", "old_format_with_checksum", "moved_from_other_key"])
def test_forged_values_are_refused(redis_server, forgery):
    src, t = cache(), toks(22)
    keys = stored_by_acme(redis_server.url, t, src)
    r = redis.Redis(port=redis_server.port)
    victim = "lmcache:" + keys[1]
    value = r.get(victim)
    record = attacker_payload(value[wire.HEADER_BYTES:])
    if forgery == "sealed_with_other_secret":  # a well-formed value, under tenant B's key
        bad = wire.encode(record, "none", chunk_key=keys[1], key=wire.RecordKey(KEY_B))
    elif forgery == "old_format_with_checksum":  # version 1: unkeyed XXH3 of the body
        bad = struct.pack("<4sBBxxQQ", b"LMCW", 1, 1, len(record), _core.checksum64(record)) + record
    else:  # A's own authentic value of chunk 0, copied onto chunk 1's key
        bad = r.get("lmcache:" + keys[0])
    r.set(victim, bad)
    hit, n, dst, s = load_into_fresh(redis_server.url, t, **ACME)
    assert n == 32 and same_blocks(src, dst, list(range(8)), 2)
    assert zero_blocks(dst, 2, 8)  # never the attacker's values
    if forgery == "moved_from_other_key":  # claims our key and fails its tag: proven bad, deleted
        assert s["remote_bad_values"] == 1 and r.get(victim) is None
    else:  # not sealed under our key at all: a miss, left for whoever may own it
        assert s["remote_get_not_ours"] == 1 and r.get(victim) == bad


def test_another_secret_reads_nothing(redis_server):
    """Same tenant salt, other secret (a misconfigured node): every value is refused."""
    src, t = cache(), toks(23)
    keys = stored_by_acme(redis_server.url, t, src)
    hit, n, dst, s = load_into_fresh(redis_server.url, t, record_key=KEY_B, **ACME)
    assert hit == 128 and n == 0 and zero_blocks(dst, 0, 8)
    assert s["remote_get_not_ours"] == 1 and s["imported_chunks"] == 0
    # A misconfigured node deletes nothing: the values stay for the engines that hold the secret.
    r = redis.Redis(port=redis_server.port)
    assert all(r.get("lmcache:" + k) is not None for k in keys)


@pytest.mark.parametrize("codec", ["none", "zstd", "lz4"])
def test_encrypted_records_round_trip_and_hide_the_payload(redis_server, codec):
    src, t = cache(), toks(24)
    with engine(redis_server.url, codec=codec, encrypt=True, **ACME) as a:
        store_and_flush(a, src, t, list(range(8)))
        keys = a.chunk_keys(t)
        records = [bytes(a._runtime.export_record(k)) for k in keys]
    r = redis.Redis(port=redis_server.port)
    rh = wire.RECORD_HEADER_BYTES
    for k, record in zip(keys, records):
        value = r.get("lmcache:" + k)
        assert value[6] & wire.FLAG_ENCRYPTED
        for at in (rh, rh + 4096, len(record) - 64):  # no 64-byte window of the payload is on the server
            assert record[at:at + 64] not in value
    # Any reader with the key loads it; its own encrypt setting only decides how it writes.
    hit, n, dst, s = load_into_fresh(redis_server.url, t, codec=codec, encrypt=False, **ACME)
    assert hit == n == 128 and same_blocks(src, dst, list(range(8)), 8) and s["remote_bad_values"] == 0


def test_encrypted_value_with_a_flipped_bit_is_refused(redis_server):
    src, t = cache(), toks(25)
    keys = stored_by_acme(redis_server.url, t, src, encrypt=True)
    r = redis.Redis(port=redis_server.port)
    victim = "lmcache:" + keys[0]
    v = bytearray(r.get(victim))
    v[wire.HEADER_BYTES + 100] ^= 0x01
    r.set(victim, bytes(v))
    hit, n, dst, s = load_into_fresh(redis_server.url, t, **ACME)
    assert n == 0 and zero_blocks(dst, 0, 8) and s["remote_bad_values"] == 1


def test_the_record_key_is_never_shown(redis_server, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ValueError, match="32 bytes"):
        wire.RecordKey(b"short")
    key = wire.RecordKey(KEY_A)
    with engine(redis_server.url, record_key=KEY_A) as e:
        texts = [repr(key), str(key), repr(e._remote), str(e._remote), caplog.text]
    for text in texts:
        assert KEY_A.hex() not in text and repr(KEY_A) not in text
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(key)
