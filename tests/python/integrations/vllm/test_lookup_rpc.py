"""The scheduler-to-worker lookup RPC over real Unix sockets and threads."""

import time
import uuid

import numpy as np

from lmcache.integrations.vllm.lookup_rpc import LookupClient, LookupServer, query_worker_stats, socket_name


def test_min_over_ranks_and_stats():
    eid = str(uuid.uuid4())
    seen = []
    servers = [
        LookupServer(socket_name(eid, r), lambda t, rid, r=r: (seen.append((t.copy(), rid)), 512 if r == 0 else 256)[1],
                     lambda r=r: {"rank": r})
        for r in range(2)
    ]
    client = LookupClient(eid, [0, 1], timeout_s=2)
    assert client.lookup(list(range(1000)), "req-7") == 256
    assert np.array_equal(seen[0][0], np.arange(1000)) and seen[0][1] == "req-7"
    assert client.lookup([1, 2], "x" * 65) == 256 and seen[-1][1] == ""  # too long to send: none
    assert query_worker_stats(eid, 1) == {"rank": 1}
    for s in servers:
        s.close()


def test_no_server_is_a_miss_not_a_hang():
    client = LookupClient(str(uuid.uuid4()), [0], timeout_s=0.5)
    t0 = time.monotonic()
    assert client.lookup([1, 2, 3]) == 0
    assert client.errors == 1 and time.monotonic() - t0 < 2


def test_slow_server_times_out_as_a_miss_and_reconnects():
    eid = str(uuid.uuid4())
    slow = {"on": True}

    def lookup(tokens, req_id):
        if slow["on"]:
            time.sleep(1.5)
        return 7

    server = LookupServer(socket_name(eid, 0), lookup, dict)
    client = LookupClient(eid, [0], timeout_s=0.3)
    assert client.lookup([1]) == 0 and client.errors == 1
    slow["on"] = False
    time.sleep(1.5)  # let the stale reply drain on the dropped connection
    assert client.lookup([1]) == 7  # a fresh connection
    server.close()


def test_server_gone_mid_run():
    eid = str(uuid.uuid4())
    server = LookupServer(socket_name(eid, 0), lambda t, rid: 3, dict)
    client = LookupClient(eid, [0], timeout_s=0.5)
    assert client.lookup([1]) == 3
    server.close()
    assert client.lookup([1]) == 0  # the old connection's server is gone: a miss


def test_segment_lookups_reach_the_segment_cache_and_miss_where_there_is_none():
    eid = str(uuid.uuid4())
    seen = []
    server = LookupServer(socket_name(eid, 0), lambda t, rid: 999, dict,
                          segment_lookup=lambda t: (seen.append(t.copy()), 128)[1])
    client = LookupClient(eid, [0], timeout_s=2)
    assert client.lookup_segment([5, 6, 7]) == 128 and np.array_equal(seen[0], [5, 6, 7])
    assert client.lookup([5, 6, 7]) == 999  # prefixes are still prefixes
    server.close()
    eid = str(uuid.uuid4())
    server = LookupServer(socket_name(eid, 0), lambda t, rid: 999, dict)  # a worker that does not blend
    assert LookupClient(eid, [0], timeout_s=2).lookup_segment([5, 6, 7]) == 0
    server.close()
