"""The control API over real caches (host memory + a disk tier with real
files): what each endpoint does to the cache, the auth rules of a real
uvicorn server on loopback, and the Prometheus exposition read back with
prometheus-client's own parser."""

import json
import urllib.error
import urllib.request

import pytest
import torch
from fastapi.testclient import TestClient
from kv_helpers import flash_attn_cache
from prometheus_client.parser import text_string_to_metric_families

import lmcache
from lmcache.control import CacheRegistry
from lmcache.control.app import make_app
from lmcache.control.server import ControlServer

DOC = list(range(1000, 1064))  # 4 chunks of 16


@pytest.fixture
def cache(tmp_path):
    cfg = lmcache.Config(chunk_size=16, l1_capacity_gb=0.01, local_disk_path=str(tmp_path / "disk"),
                         disk_lock_timeout_s=0.2, model_id="model-a", tenant_salt="tenant-a")
    with lmcache.CacheEngine(cfg) as e:
        e.register_kv_caches(flash_attn_cache(blocks=16))
        yield e


@pytest.fixture
def api(cache):
    caches = CacheRegistry()
    caches.add("main", cache)
    return TestClient(make_app(caches))


def test_lookup_reports_each_tier(api, cache):
    assert api.post("/lookup", json={"tokens": DOC}).json()["hit_tokens"] == 0
    cache.store(DOC, block_ids=list(range(8)))
    cache.flush_writes()
    r = api.post("/lookup", json={"tokens": DOC + [7] * 5}).json()
    assert (r["hit_tokens"], r["host_tokens"], r["disk_tokens"], r["remote_tokens"]) == (64, 64, 64, 0)
    assert r["tokens"] == 69 and r["chunk_size"] == 16
    # Locating counts nothing and moves nothing.
    assert cache.stats()["lookups"] == 0


def test_evict_then_prefetch_brings_chunks_back_from_disk(api, cache):
    cache.store(DOC, block_ids=list(range(8)))
    cache.flush_writes()
    assert api.post("/evict", json={"tokens": DOC}).json()["removed"] == 4
    r = api.post("/lookup", json={"tokens": DOC}).json()
    assert (r["host_tokens"], r["disk_tokens"], r["hit_tokens"]) == (0, 64, 64)
    assert api.post("/prefetch", json={"tokens": DOC}).json()["host_tokens"] == 64
    assert api.post("/lookup", json={"tokens": DOC}).json()["host_tokens"] == 64
    # Evicting from disk too leaves nothing.
    assert api.post("/evict", json={"tokens": DOC, "include_disk": True}).json()["removed"] == 8
    assert api.post("/lookup", json={"tokens": DOC}).json()["hit_tokens"] == 0


def test_pinned_chunks_survive_evict_and_clear(api, cache):
    cache.store(DOC, block_ids=list(range(8)))
    assert api.post("/pin", json={"tokens": DOC[:32]}).json()["chunks"] == 2
    api.post("/evict", json={"tokens": DOC})
    api.post("/clear", json={"include_disk": False})
    assert api.post("/lookup", json={"tokens": DOC}).json()["host_tokens"] == 32
    assert api.post("/unpin", json={"tokens": DOC[:32]}).json()["chunks"] == 2
    api.post("/clear", json={})
    assert api.post("/lookup", json={"tokens": DOC}).json()["hit_tokens"] == 0


def test_clear_by_model_and_tenant_touches_only_matching_caches(api, cache):
    cache.store(DOC, block_ids=list(range(8)))
    assert api.post("/clear", json={"model": "model-b"}).json() == {"removed": 0, "caches": []}
    assert api.post("/clear", json={"tenant": "tenant-b"}).json()["caches"] == []
    assert api.post("/clear", json={"model": "model-a", "tenant": "tenant-b"}).json()["caches"] == []
    assert api.post("/lookup", json={"tokens": DOC}).json()["host_tokens"] == 64
    r = api.post("/clear", json={"tenant": "tenant-a", "include_disk": False}).json()
    assert r["caches"] == ["main"] and r["removed"] == 4
    assert api.post("/clear", json={"scope": "model"}).status_code == 422  # unknown fields are refused


def test_bad_input_is_a_clear_4xx(api):
    assert api.post("/lookup", json={"tokens": [-1]}).status_code == 422
    assert api.post("/lookup", json={"tokens": [1 << 32]}).status_code == 422
    assert api.post("/lookup", json={"tokens": "12"}).status_code == 422
    assert api.post("/lookup", json={"tokens": [1], "cache": "../x"}).status_code == 422
    r = api.post("/lookup", json={"tokens": [1], "cache": "other"})
    assert r.status_code == 404 and "no cache named 'other'" in r.json()["detail"]
    r = api.post("/lookup", content=b"x" * 64, headers={"content-length": str(64 << 20),
                                                         "content-type": "application/json"})
    assert r.status_code == 413


def test_a_cache_without_a_kv_shape_answers_409(tmp_path):
    with lmcache.CacheEngine(lmcache.Config(chunk_size=16, l1_capacity_gb=0.01)) as e:
        caches = CacheRegistry()
        caches.add("main", e)
        r = TestClient(make_app(caches)).post("/lookup", json={"tokens": DOC})
        assert r.status_code == 409 and "KV shape" in r.json()["detail"]


def test_metrics_parse_back_with_prometheus_client(api, cache):
    cache.store(DOC, block_ids=list(range(8)))
    cache.flush_writes()
    assert cache.lookup(DOC + list(range(16))) == 64
    dst = flash_attn_cache(blocks=16, fill=False)
    assert cache.load(DOC, dst, block_ids=list(range(8, 16))) == 64
    r = api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def value(name, **labels):
        return samples[(name, tuple(sorted({"cache": "main", "model": "model-a", **labels}.items())))]

    assert value("lmcache_lookups_total") == 1
    assert value("lmcache_hit_tokens_total", tier="host") == 64
    assert value("lmcache_miss_tokens_total", tier="host") == 16
    assert value("lmcache_stored_tokens_total", tier="host") == 64
    assert value("lmcache_stored_tokens_total", tier="disk") == 64
    assert value("lmcache_loaded_tokens_total", tier="host") == 64
    assert value("lmcache_stored_bytes_total", tier="disk") > 0
    assert value("lmcache_used_bytes", tier="host") > 0
    assert value("lmcache_write_queue_depth", tier="disk") == 0
    assert value("lmcache_errors_total", tier="disk", kind="read") == 0
    # Latency histograms: one lookup, one load, one store observed.
    for op in ("lookup", "load", "store"):
        assert value(f"lmcache_{op}_seconds_count") == 1
        assert value(f"lmcache_{op}_seconds_bucket", le="+Inf") == 1


def _get(url, token=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_loopback_without_a_token_serves(cache):
    caches = CacheRegistry()
    caches.add("main", cache)
    server = ControlServer(caches, "127.0.0.1", 0)
    try:
        assert server.wait_started()
        assert _get(server.url + "/health") == (200, {"status": "ok", "caches": 1})
    finally:
        server.stop()


def test_other_binds_require_a_token(cache):
    caches = CacheRegistry()
    with pytest.raises(lmcache.ConfigError, match="requires control_token"):
        ControlServer(caches, "0.0.0.0", 0)
    # With a token: served, and requests without it (or with a wrong one) get 401.
    server = ControlServer(caches, "0.0.0.0", 0, token="s3cret-token")
    try:
        assert server.wait_started()
        url = f"http://127.0.0.1:{server.port}"
        status, body = _get(url + "/health")
        assert status == 401 and "bearer token" in body["detail"]
        assert _get(url + "/health", "wrong")[0] == 401
        assert _get(url + "/health", "s3cret-token")[0] == 200
        assert _get(url + "/stats", "s3cret-token")[0] == 200
    finally:
        server.stop()


def test_a_taken_port_is_a_clear_error(cache):
    first = ControlServer(CacheRegistry(), "127.0.0.1", 0)
    try:
        with pytest.raises(lmcache.ConfigError, match="cannot serve the control API"):
            ControlServer(CacheRegistry(), "127.0.0.1", first.port)
    finally:
        first.stop()


def test_engine_with_control_port_serves_and_unregisters_on_close(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    from lmcache.control import server as control_server

    e = lmcache.CacheEngine(lmcache.Config(chunk_size=16, l1_capacity_gb=0.01, control_port=port))
    srv = control_server.process_server()
    assert srv is not None and srv.wait_started()
    status, body = _get(f"{srv.url}/stats")
    assert status == 200 and e.name in body["caches"]
    e.close()
    assert e.name not in _get(f"{srv.url}/stats")[1]["caches"]


def _status_as_user(uid: int, port: int, path: str) -> int:
    """The HTTP status a process of user `uid` gets (a forked child that
    drops to that user and speaks HTTP over a plain socket)."""
    import os
    import socket

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only system calls from here on
        code = b"000"
        try:
            os.setgid(uid)
            os.setuid(uid)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                code = s.recv(64).split(b" ")[1][:3]
        finally:
            os.write(write_end, code)
            os._exit(0)
    os.close(write_end)
    code = os.read(read_end, 3)
    os.close(read_end)
    os.waitpid(pid, 0)
    return int(code)


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="switching to another user needs root (CI runs as root)")
def test_another_user_on_loopback_is_refused_without_a_token(cache):
    """127.0.0.1 is reachable by every local user: without a token, only the
    cache's own user is answered (its uid read from the kernel's socket table)."""
    caches = CacheRegistry()
    caches.add("main", cache)
    server = ControlServer(caches, "127.0.0.1", 0)
    try:
        assert server.wait_started()
        assert _status_as_user(0, server.port, "/health") == 200  # our own user
        for path in ("/health", "/stats", "/metrics", "/openapi.json"):
            assert _status_as_user(65534, server.port, path) == 403, path
    finally:
        server.stop()
