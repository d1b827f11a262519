"""The node server (`lmcache server`, a real process) with engines attached
through real sockets and its shared pool: what one engine stores another
hits, byte for byte; an engine killed with -9 while holding chunks leaks
nothing; a killed and restarted server is reattached and keeps its disk
tier; other users and malformed frames are refused."""

import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from kv_helpers import flash_attn_cache
from node_server import NodeServerProcess

import lmcache
from lmcache.server import protocol as P

DOC = list(range(3000, 3128))  # 8 chunks of 16


@pytest.fixture
def node(tmp_path):
    server = NodeServerProcess(str(tmp_path / "run" / "lmcache.sock"), chunk_size=16, l1_capacity_gb=0.02,
                               local_disk_path=tmp_path / "disk", server_lease_timeout_s=30)
    yield server
    server.stop()


def engine(node, **kw):
    cfg = lmcache.Config(chunk_size=16, server_socket=node.socket_path, model_id="m", server_reconnect_s=0.05, **kw)
    return lmcache.CacheEngine(cfg)


def test_what_one_engine_stores_another_process_loads(node, tmp_path):
    src = flash_attn_cache(blocks=16)
    with engine(node) as a:
        a.register_kv_caches(src)
        assert a.store(DOC, block_ids=list(range(16))) == 128
        assert a.lookup(DOC) == 128
        s = a.stats()
        assert s["server_connected"] and s["stored_chunks"] == 8
    # Another engine process (same model and shape): hits, and the bytes match.
    torch.save(src, tmp_path / "src.pt")
    script = textwrap.dedent(f"""
        import sys, torch, lmcache
        sys.path.insert(0, {os.path.dirname(os.path.dirname(__file__))!r})
        from kv_helpers import flash_attn_cache
        cfg = lmcache.Config(chunk_size=16, server_socket={node.socket_path!r}, model_id="m")
        with lmcache.CacheEngine(cfg) as b:
            dst = flash_attn_cache(blocks=16, fill=False)
            b.register_kv_caches(dst)
            hit = b.lookup({DOC!r})
            loaded = b.load({DOC!r}, block_ids=list(range(16)))
            src = torch.load({str(tmp_path / "src.pt")!r})
            same = all(torch.equal(x, y) for x, y in zip(src, dst))
            print(hit, loaded, same)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["128", "128", "True"], out.stderr[-3000:]


def test_engines_in_another_namespace_do_not_share(node):
    with engine(node) as a, engine(node, tenant_salt="other-tenant") as b:
        a.register_kv_caches(flash_attn_cache(blocks=16))
        b.register_kv_caches(flash_attn_cache(blocks=16))
        a.store(DOC, block_ids=list(range(16)))
        assert a.lookup(DOC) == 128 and b.lookup(DOC) == 0


def _raw_client(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    P.send(s, P.HELLO, {"version": P.VERSION})
    assert P.recv(s)[0] == P.OK
    return s


def test_a_killed_engine_leaks_no_leases_or_reservations(node):
    with engine(node) as a:
        a.register_kv_caches(flash_attn_cache(blocks=16))
        a.store(DOC, block_ids=list(range(16)))
        keys = a.keys(DOC).to_bytes()
        pool = a._runtime._pool
        # Another process holds every chunk (a load in progress) and reserves
        # slabs for a store, then is killed with -9.
        holder = textwrap.dedent(f"""
            import socket, sys, time
            from lmcache.server import protocol as P
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect({node.socket_path!r})
            P.send(s, P.HELLO, {{"version": P.VERSION}}); P.recv(s)
            P.send(s, P.HOLD, {{"pool": {pool}, "max_chunks": 8}}, {keys!r}); op, h, _, _ = P.recv(s)
            other = bytes(range(16)) + bytes(range(1, 17)) + bytes(range(2, 18))
            P.send(s, P.RESERVE, {{"pool": {pool}}}, other); op2, w, _, _ = P.recv(s)
            print(len(h["slabs"]), sum(x >= 0 for x in w["slabs"]), flush=True)
            time.sleep(600)
        """)
        proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().split() == ["8", "3"]
        used_before = a.stats()["l1_used_bytes"]
        assert a.evict(DOC) == 0  # held chunks are never evicted
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while a.stats()["server_leases_reclaimed"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        s = a.stats()
        assert s["server_leases_reclaimed"] == 1 and s["server_writes_reclaimed"] == 1
        assert s["l1_used_bytes"] < used_before  # the 3 reserved slabs came back
        assert a.evict(DOC) == 8  # and the chunks are free to go


def test_a_lease_times_out_while_its_engine_hangs(tmp_path):
    node = NodeServerProcess(str(tmp_path / "run" / "s.sock"), chunk_size=16, l1_capacity_gb=0.02,
                             server_lease_timeout_s=0.5)
    try:
        with engine(node) as a:
            a.register_kv_caches(flash_attn_cache(blocks=16))
            a.store(DOC, block_ids=list(range(16)))
            s = _raw_client(node.socket_path)
            P.send(s, P.HOLD, {"pool": a._runtime._pool, "max_chunks": 8}, a.keys(DOC).to_bytes())
            assert len(P.recv(s)[1]["slabs"]) == 8
            assert a.evict(DOC) == 0
            time.sleep(1.5)
            assert a.evict(DOC) == 8 and a.stats()["server_leases_expired"] >= 1
            s.close()
    finally:
        node.stop()


def test_server_killed_and_restarted_engines_reattach_and_keep_the_disk_tier(node):
    src = flash_attn_cache(blocks=16)
    with engine(node) as a:
        a.register_kv_caches(src)
        a.store(DOC, block_ids=list(range(16)))
        a.flush_writes()  # on disk now
        node.kill()
        # Meanwhile: misses, no errors.
        assert a.lookup(DOC) == 0
        dst = flash_attn_cache(blocks=16, fill=False)
        assert a.load(DOC, dst, block_ids=list(range(16))) == 0
        assert a.store(DOC, block_ids=list(range(16))) == 0
        assert not a.stats()["server_connected"]
        node.start()  # same socket, same disk directory
        time.sleep(0.1)
        assert a.lookup(DOC) == 128  # reattached; the chunks come from the restarted server's disk tier
        assert a.load(DOC, dst, block_ids=list(range(16))) == 128
        assert all(torch.equal(x, y) for x, y in zip(src, dst))
        assert a.stats()["server_attaches"] >= 2


def test_no_server_yet_is_a_miss_then_attaches(tmp_path):
    path = str(tmp_path / "run" / "later.sock")
    cfg = lmcache.Config(chunk_size=16, server_socket=path, model_id="m", server_reconnect_s=0.05)
    with lmcache.CacheEngine(cfg) as a:
        a.register_kv_caches(flash_attn_cache(blocks=16))
        assert a.lookup(DOC) == 0 and a.store(DOC, block_ids=list(range(16))) == 0
        node = NodeServerProcess(path, chunk_size=16, l1_capacity_gb=0.02)
        try:
            time.sleep(0.1)
            assert a.store(DOC, block_ids=list(range(16))) == 128 and a.lookup(DOC) == 128
        finally:
            node.stop()


def _connect_as(uid: int, path: str) -> str:
    """What a process of `uid` gets when it attaches (a forked child)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        result = b"attached"
        try:
            os.setgid(uid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            P.send(s, P.HELLO, {"version": P.VERSION})
            P.recv(s)
        except PermissionError:
            result = b"no access"
        except Exception:  # noqa: BLE001 - the server closed the connection
            result = b"refused"
        finally:
            os.write(write_end, result)
            os._exit(0)
    os.close(write_end)
    result = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    return result


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root (CI runs as root)")
def test_an_attach_from_another_uid_is_refused(tmp_path):
    # The socket's directory is the server's alone: another user cannot reach it ...
    node = NodeServerProcess(str(tmp_path / "run" / "s.sock"), chunk_size=16, l1_capacity_gb=0.02)
    try:
        assert _connect_as(65534, node.socket_path) == "no access"
        assert _connect_as(0, node.socket_path) == "attached"
    finally:
        node.stop()
    # ... and where other users may reach it, only the allowed uids are answered.
    import shutil
    import tempfile

    reachable = tempfile.mkdtemp(prefix="lmcache-server-test-")  # under /tmp, which every user may traverse
    os.chmod(reachable, 0o755)
    node = NodeServerProcess(os.path.join(reachable, "run", "s.sock"), chunk_size=16, l1_capacity_gb=0.02,
                             server_allowed_uids="12345")
    try:
        assert _connect_as(65534, node.socket_path) == "refused"
        assert _connect_as(12345, node.socket_path) == "attached"
    finally:
        node.stop()
        shutil.rmtree(reachable, ignore_errors=True)


def test_malformed_frames_drop_the_connection_not_the_server(node):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(node.socket_path)
    s.sendall(struct.pack("!BII", P.HELLO, 1 << 30, 0))  # a header far over the bound
    assert s.recv(16) == b""
    s.close()
    s = _raw_client(node.socket_path)
    P.send(s, P.LOOKUP, {"pool": 99}, b"x" * 5)  # no such pool, and not whole keys
    op, reply, _, _ = P.recv(s)
    assert op == P.ERROR and reply["error"]
    s.close()
    with engine(node) as a:  # still serving
        a.register_kv_caches(flash_attn_cache(blocks=16))
        assert a.store(DOC, block_ids=list(range(16))) == 128


def test_the_server_serves_the_node_control_api_and_metrics(tmp_path):
    import json
    import urllib.request

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    node = NodeServerProcess(str(tmp_path / "run" / "s.sock"), chunk_size=16, l1_capacity_gb=0.02,
                             control_port=port)
    try:
        with engine(node) as a:
            a.register_kv_caches(flash_attn_cache(blocks=16))
            a.store(DOC, block_ids=list(range(16)))
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as r:
                caches = json.loads(r.read())["caches"]
            assert caches["pool-1"]["stored_chunks"] == 8 and caches["pool-1"]["l1_chunks"] == 8
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                text = r.read().decode()
            assert 'lmcache_stored_tokens_total{cache="pool-1"' in text
    finally:
        node.stop()


def test_bad_requests_get_one_line_errors_and_the_session_goes_on(node):
    with engine(node) as a:
        a.register_kv_caches(flash_attn_cache(blocks=16))
        a.store(DOC, block_ids=list(range(16)))
        pool, keys = a._runtime._pool, a.keys(DOC).to_bytes()
        s = _raw_client(node.socket_path)
        for header in ({"pool": pool, "max_chunks": -1}, {"pool": pool, "max_chunks": 10**30},
                       {"pool": pool, "max_chunks": "8"}, {"pool": "1"}, {}):
            P.send(s, P.HOLD, header, keys)
            op, reply, _, _ = P.recv(s)
            assert op == P.ERROR and reply["error"], header
        P.send(s, P.RELEASE, {"pool": pool, "lease": 12345})  # not ours: nothing happens
        assert P.recv(s)[1] == {"released": False}
        P.send(s, P.COMMIT, {"pool": pool, "write": 999})
        assert P.recv(s)[1] == {"published": 0}
        P.send(s, P.HOLD, {"pool": pool, "max_chunks": 8}, keys)  # the session still works
        op, reply, _, _ = P.recv(s)
        assert op == P.OK and len(reply["slabs"]) == 8
        s.close()


def test_an_existing_socket_directory_is_never_re_permissioned(tmp_path):
    open_dir = tmp_path / "shared-dir"
    open_dir.mkdir(mode=0o755)
    os.chmod(open_dir, 0o755)
    with pytest.raises(RuntimeError, match="mode 700"):
        NodeServerProcess(str(open_dir / "s.sock"), chunk_size=16, l1_capacity_gb=0.02)
    assert oct(os.stat(open_dir).st_mode & 0o777) == "0o755"


def test_metrics_of_an_engine_whose_server_is_away_still_scrape(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    from lmcache import metrics

    cfg = lmcache.Config(chunk_size=16, server_socket=str(tmp_path / "run" / "none.sock"), model_id="m")
    with lmcache.CacheEngine(cfg) as a:
        families = list(text_string_to_metric_families(metrics.exposition(lambda: [("main", a)]).decode()))
        assert any(f.name == "lmcache_lookups" for f in families)
        a.register_kv_caches(flash_attn_cache(blocks=16))
        assert a.stats()["server_connected"] is False
        families = list(text_string_to_metric_families(metrics.exposition(lambda: [("main", a)]).decode()))
        assert any(f.name == "lmcache_hit_tokens" for f in families)


def test_a_shape_the_pool_cannot_hold_is_refused_and_leaves_nothing(node):
    s = _raw_client(node.socket_path)
    P.send(s, P.SHAPE, {"shape": [2, 2, 2, 16, "no-such-dtype", 0]})
    op, reply, _, fds = P.recv(s, want_fds=1)
    assert op == P.ERROR and not fds
    P.send(s, P.SHAPE, {"shape": [4096, 2, 64, 128, "float32", 0]})  # a chunk larger than the whole pool
    op, reply, _, fds = P.recv(s, want_fds=1)
    assert op == P.ERROR and "smaller than one chunk" in reply["error"] and not fds
    s.close()


def test_loads_and_lookups_from_two_threads_across_a_server_restart(node):
    """The lookup thread of a vLLM worker may reattach (and remap the pool)
    while the main thread loads: every load either completes whole or
    delivers nothing, and the data loaded is always right."""
    import threading

    src = flash_attn_cache(blocks=16)
    with engine(node) as a:
        a.register_kv_caches(src)
        a.store(DOC, block_ids=list(range(16)))
        a.flush_writes()
        stop, errors, loads = threading.Event(), [], []

        def looker():
            while not stop.is_set():
                try:
                    a.lookup(DOC)
                except Exception as e:  # noqa: BLE001 - any exception is a failure of this test
                    errors.append(e)

        def loader():
            while not stop.is_set():
                dst = flash_attn_cache(blocks=16, fill=False)
                try:
                    n = a.load(DOC, dst, block_ids=list(range(16)))
                except Exception as e:  # noqa: BLE001
                    errors.append(e)
                    continue
                loads.append(n)
                if n == 128 and not all(torch.equal(x, y) for x, y in zip(src, dst)):
                    errors.append(AssertionError("wrong KV loaded"))

        threads = [threading.Thread(target=looker), threading.Thread(target=loader)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        node.kill()
        time.sleep(0.3)
        node.start()
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        assert 0 in loads and loads[-1] == 128  # misses while it was away, hits from its disk tier after
