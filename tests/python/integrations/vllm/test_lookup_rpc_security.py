"""The scheduler-to-worker lookup socket admits only the engine's own user,
and bounds what any peer can make the worker spend: real Unix sockets, real
threads, and child processes that drop to uid 65534 (nobody)."""

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest

pytest.importorskip("vllm", reason="vLLM is installed by scripts/setup.sh")

from lmcache.integrations.vllm.lookup_rpc import (  # noqa: E402
    MAX_TOKENS,
    REQ_ID_BYTES,
    LookupClient,
    LookupServer,
    clear_worker_cache,
    lookup_dir,
    open_connection,
    query_worker_stats,
    socket_name,
)

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root")

# Runs as nobody: tries the socket (and the secret file beside it) and says what happened.
PROBE_AS_NOBODY = r"""
import json, os, socket, sys
path, key = sys.argv[1], sys.argv[2]
os.setuid(65534)
out = {}
try:
    open(key, "rb").read()
    out["key"] = "read"
except OSError as e:
    out["key_error"] = e.errno
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
try:
    s.connect(path)
    out["connected"] = True
    # A made-up secret, then "clear every tier".
    s.sendall(b"H" + (32).to_bytes(4, "little") + bytes(32) + b"C" + (1).to_bytes(4, "little"))
    out["reply"] = s.recv(64).hex()
except OSError as e:
    out["error"] = e.errno
print(json.dumps(out))
"""

# Runs as nobody: a listening socket that reports how many bytes its one client sent.
SERVER_AS_NOBODY = r"""
import os, socket, sys
path = sys.argv[1]
os.setuid(65534)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(1)
print("ready", flush=True)
s.settimeout(60)
conn, _ = s.accept()
conn.settimeout(10)
got = 0
while True:
    try:
        piece = conn.recv(65536)
    except OSError:
        break
    if not piece:
        break
    got += len(piece)
print(got, flush=True)
"""


class Worker:
    """A LookupServer with recording callbacks."""

    def __init__(self, eid: str, rank: int = 0, hit: int = 7, **kw) -> None:
        self.eid, self.looked_up, self.req_ids, self.cleared = eid, [], [], []
        self.path = socket_name(eid, rank)
        self.server = LookupServer(self.path, self._lookup, lambda: {"rank": rank}, self._clear, **kw)
        self.hit = hit

    def _lookup(self, tokens, req_id):
        self.looked_up.append(tokens.copy())
        self.req_ids.append(req_id)
        return self.hit

    def _clear(self, include_disk):
        self.cleared.append(include_disk)
        return 3

    def count(self, name: str) -> int:
        return self.server.stats()[f"lookup_rpc_{name}"]


@pytest.fixture
def worker():
    made = []

    def make(eid=None, **kw):
        w = Worker(eid or str(uuid.uuid4()), **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.server.close()


def raw(path: str) -> socket.socket:
    """A connection that sends nothing by itself."""
    deadline = time.monotonic() + 60
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        try:
            s.connect(path)
            return s
        except BlockingIOError:  # the listen backlog is full until the server's accept loop catches up
            s.close()
            assert time.monotonic() < deadline, "the server never accepted"
            time.sleep(0.01)


def closed_by_server(s: socket.socket) -> bool:
    """Blocks until the server closes s (True) or sends something (False)."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def still_open(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        s.recv(1, socket.MSG_PEEK)
        return False
    except BlockingIOError:
        return True
    finally:
        s.settimeout(30)


def wait_until(condition, what: str, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def header(op: bytes, n: int) -> bytes:
    return struct.pack("<cI", op, n)


def probe_as_nobody(path: str) -> dict:
    key = os.path.splitext(path)[0] + ".key"
    out = subprocess.run([sys.executable, "-c", PROBE_AS_NOBODY, path, key], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# ---------------------------------------------------------------- where the socket lives
def test_socket_is_a_0600_file_in_a_0700_directory_of_ours(worker):
    w = worker()
    d = os.path.dirname(w.path)
    assert d == lookup_dir(w.eid)
    for path, mode in ((d, 0o700), (w.path, 0o600), (os.path.splitext(w.path)[0] + ".key", 0o600)):
        st = os.lstat(path)
        assert (st.st_mode & 0o777, st.st_uid) == (mode, os.geteuid()), path
    with open("/proc/net/unix") as f:
        names = [line.split()[-1] for line in f.read().splitlines()[1:] if len(line.split()) > 7]
    assert w.path in names
    assert not [n for n in names if n.startswith("@lmcache")]  # nothing in the abstract namespace


def test_round_trip_still_works(worker):
    eid = str(uuid.uuid4())
    a, b = worker(eid, rank=0, hit=512), worker(eid, rank=1, hit=256)
    client = LookupClient(eid, [0, 1], timeout_s=5)
    assert client.lookup(list(range(1000))) == 256
    assert a.looked_up[0].tolist() == list(range(1000)) and client.errors == 0
    assert query_worker_stats(eid, 1) == {"rank": 1}
    assert clear_worker_cache(eid, 0, include_disk=True) == 3 and a.cleared == [True]
    assert b.cleared == [] and a.count("auth_failures") == 0
    client.close()


def test_files_are_removed_on_close(worker):
    w = worker()
    w.server.close()
    assert not os.path.exists(lookup_dir(w.eid))


# ---------------------------------------------------------------- other users
@needs_root
def test_another_uid_cannot_reach_the_socket_or_the_secret(worker):
    w = worker()
    out = probe_as_nobody(w.path)
    assert out == {"key_error": 13, "error": 13}  # EACCES on both: the directory is 0700
    assert w.cleared == [] and w.looked_up == []


@needs_root
def test_peer_credentials_refuse_another_uid_even_if_the_files_were_opened_up(worker):
    w = worker()
    d = os.path.dirname(w.path)
    os.chmod(d, 0o755)  # as if someone loosened the modes
    os.chmod(w.path, 0o666)
    try:
        out = probe_as_nobody(w.path)
    finally:
        os.chmod(d, 0o700)
        os.chmod(w.path, 0o600)
    assert out["key_error"] == 13  # the secret file stays 0600
    assert out.get("connected") and out.get("reply", "") == ""  # closed without a byte of reply
    assert w.count("refused_peers") == 1 and w.cleared == []


@needs_root
def test_client_sends_nothing_to_a_server_of_another_uid():
    eid = str(uuid.uuid4())
    d = lookup_dir(eid)
    nobody_dir = tempfile.mkdtemp(dir=os.path.dirname(d))  # the same file system: the socket is moved below
    os.chown(nobody_dir, NOBODY, NOBODY)
    child = subprocess.Popen([sys.executable, "-c", SERVER_AS_NOBODY, os.path.join(nobody_dir, "s.sock")],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        # nobody's socket, planted where rank 0's would be, with a secret beside it.
        os.mkdir(d, 0o700)
        with open(os.path.join(d, "rank-0.key"), "wb", opener=lambda p, f: os.open(p, f, 0o600)) as f:
            f.write(bytes(32))
        os.rename(os.path.join(nobody_dir, "s.sock"), socket_name(eid, 0))
        client = LookupClient(eid, [0], timeout_s=5)
        assert client.lookup([1, 2, 3]) == 0 and client.errors == 1
        client.close()
        assert child.communicate(timeout=60)[0].strip() == "0"  # no secret, no prompt
    finally:
        child.kill()
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(nobody_dir, ignore_errors=True)


# ---------------------------------------------------------------- the secret
def test_without_the_secret_nothing_is_answered_and_nothing_cleared(worker):
    w = worker()
    attempts = [
        header(b"C", 1),  # no hello at all
        header(b"L", 2) + bytes(REQ_ID_BYTES + 8),
        header(b"H", 32) + bytes(32) + header(b"C", 1),  # a wrong secret
        header(b"H", 32) + os.urandom(32) + header(b"S", 0),
    ]
    for frames in attempts:
        s = raw(w.path)
        s.sendall(frames)
        assert closed_by_server(s)
        s.close()
    assert w.count("auth_failures") == 4
    assert w.cleared == [] and w.looked_up == []


# ---------------------------------------------------------------- bounds
def vm_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def test_huge_length_fields_allocate_nothing_and_close_the_connection(worker):
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak RSS, to the RSS now
    except OSError:
        pytest.skip("this kernel cannot reset the peak RSS")
    w = worker(idle_timeout_s=2.0)
    baseline = vm_kib("VmRSS")
    for n in (2**31, 2**32 - 1, 2**26):  # 2**26 token ids: 256 MiB
        conns = [open_connection(w.path, 30) for _ in range(6)]
        for s in conns:
            s.sendall(header(b"L", n))
        assert all(closed_by_server(s) for s in conns)
        for s in conns:
            s.close()
    assert w.count("malformed_frames") == 18
    # Valid lengths (MAX_TOKENS ids, 16 MiB each) with 4 bytes sent: held until the idle timeout.
    idle = [open_connection(w.path, 30) for _ in range(6)]
    for s in idle:
        s.sendall(header(b"L", MAX_TOKENS) + bytes(4))
    assert all(closed_by_server(s) for s in idle)
    assert w.count("idle_timeouts") == 6
    grown_mib = (vm_kib("VmHWM") - baseline) / 1024
    assert grown_mib < 32, f"the peak RSS grew by {grown_mib:.0f} MiB"
    assert w.looked_up == []


def test_connections_past_the_cap_are_refused_and_threads_stay_bounded(worker):
    w = worker(max_connections=4, idle_timeout_s=120.0)
    threads_before = threading.active_count()
    conns = [raw(w.path) for _ in range(20)]
    wait_until(lambda: w.count("refused_over_cap") == 16, "16 refusals")
    assert threading.active_count() <= threads_before + 4
    assert [still_open(s) for s in conns] == [True] * 4 + [False] * 16
    client = LookupClient(w.eid, [0], timeout_s=5)
    assert client.lookup([1]) == 0  # the cap holds for everyone
    conns[0].close()
    wait_until(lambda: w.server.connection_count < 4, "a slot freed by a closed peer")
    assert client.lookup([1]) == 7
    for s in conns:
        s.close()
    client.close()


def test_idle_and_slow_peers_are_dropped_and_their_threads_end(worker):
    w = worker(idle_timeout_s=0.5)
    threads_before = threading.active_count()
    silent = [raw(w.path) for _ in range(3)]
    slow = open_connection(w.path, 30)
    slow.sendall(header(b"L", 10) + bytes(5))  # half a frame, then nothing
    assert all(closed_by_server(s) for s in silent + [slow])
    assert w.count("idle_timeouts") == 4
    wait_until(lambda: threading.active_count() <= threads_before, "the connection threads to end")
    client = LookupClient(w.eid, [0], timeout_s=5)
    assert client.lookup([1, 2]) == 7  # still serving
    client.close()


def test_client_reconnects_after_the_server_dropped_it_while_idle(worker):
    w = worker(idle_timeout_s=0.3)
    client = LookupClient(w.eid, [0], timeout_s=5)
    assert client.lookup([1]) == 7
    wait_until(lambda: w.count("idle_timeouts") == 1 and w.server.connection_count == 0, "the idle client dropped")
    assert client.lookup([1]) == 7 and client.errors == 0  # a fresh connection, not a miss
    client.close()


@pytest.mark.parametrize("frames", [
    header(b"X", 0),  # unknown op
    header(b"S", 5),  # stats take no argument
    header(b"C", 2),  # clear is 0 (host) or 1 (every tier)
    header(b"H", 32) + bytes(32),  # a second hello
    header(b"L", 101),  # past this server's max_tokens
])
def test_a_malformed_frame_closes_only_its_connection(worker, frames):
    w = worker(max_tokens=100)
    client = LookupClient(w.eid, [0], timeout_s=5)
    assert client.lookup([1]) == 7
    bad = open_connection(w.path, 30)
    bad.sendall(header(b"L", 1) + bytes(REQ_ID_BYTES + 4))
    assert bad.recv(8) == struct.pack("<Q", 7)  # a good frame first: served
    bad.sendall(frames)
    assert closed_by_server(bad)
    assert w.count("malformed_frames") == 1 and w.cleared == []
    assert client.lookup([1, 2]) == 7 and client.errors == 0  # the others keep being served
    client.close()


def test_client_looks_up_a_prompt_past_the_limit_by_its_first_tokens(worker):
    w = worker(max_tokens=100)
    client = LookupClient(w.eid, [0], timeout_s=5, max_tokens=100)
    assert client.lookup(list(range(1000))) == 7
    assert w.looked_up[0].tolist() == list(range(100)) and w.count("malformed_frames") == 0
    client.close()


# ---------------------------------------------------------------- the directory
def loose(d):
    os.chmod(d, 0o755)


def not_ours(d):
    os.chown(d, NOBODY, NOBODY)


def a_symlink(d):
    target = tempfile.mkdtemp()
    os.rmdir(d)
    os.symlink(target, d)


@pytest.mark.parametrize("spoil", [loose, pytest.param(not_ours, marks=needs_root), a_symlink])
def test_a_directory_that_is_not_private_is_refused(spoil):
    eid = str(uuid.uuid4())
    d = lookup_dir(eid)
    os.mkdir(d, 0o700)
    try:
        spoil(d)
        with pytest.raises(PermissionError, match="mode 0700"):
            LookupServer(socket_name(eid, 0), lambda t, rid: 1, dict)
        client = LookupClient(eid, [0], timeout_s=5)
        assert client.lookup([1]) == 0 and client.errors == 1
        with pytest.raises(PermissionError):
            query_worker_stats(eid)
    finally:
        if os.path.islink(d):
            shutil.rmtree(os.readlink(d), ignore_errors=True)
            os.unlink(d)
        else:
            shutil.rmtree(d, ignore_errors=True)


def test_a_live_servers_socket_is_not_taken_over(worker):
    w = worker()
    with pytest.raises(OSError, match="already serves"):
        LookupServer(w.path, lambda t, rid: 1, dict)
    client = LookupClient(w.eid, [0], timeout_s=5)
    assert client.lookup([1]) == 7  # the live server kept its socket and its secret
    client.close()


def test_a_dead_servers_socket_file_is_replaced(worker):
    eid = str(uuid.uuid4())
    path = socket_name(eid, 0)
    os.mkdir(os.path.dirname(path), 0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)  # what a process that died without closing leaves behind
    w = worker(eid, hit=9)
    client = LookupClient(eid, [0], timeout_s=5)
    assert client.lookup([1]) == 9
    client.close()
