"""The `lmcache` command, each subcommand run as a subprocess: help, the
effective configuration with its sources, and every control command against
a real `lmcache serve-control` process that owns a cache on a disk directory
filled beforehand. Errors are one readable line, never a traceback."""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from kv_helpers import flash_attn_cache

import lmcache

LMCACHE = shutil.which("lmcache")
DOC = list(range(2000, 2064))  # 4 chunks of 16
COMMANDS = ["demo", "bench", "stats", "lookup", "pin", "prefetch", "evict", "clear", "health", "serve-control", "server",
            "config", "version"]


def run(*args, env=None, timeout=60, input=None):
    base = {k: v for k, v in os.environ.items() if not k.startswith("LMCACHE_")}
    return subprocess.run([LMCACHE, *args], capture_output=True, text=True, timeout=timeout,
                          env={**base, **(env or {})}, input=input)


pytestmark = pytest.mark.skipif(LMCACHE is None, reason="the lmcache command is installed by `pip install .`")


def one_line_error(proc):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_help_lists_every_command_and_each_has_its_own():
    top = run("--help")
    assert top.returncode == 0
    for cmd in COMMANDS:
        assert cmd in top.stdout, cmd
        sub = run(cmd, "--help", timeout=120)
        assert sub.returncode == 0 and "usage:" in sub.stdout.lower(), (cmd, sub.stderr[-2000:])


def test_config_shows_values_and_where_they_came_from(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("chunk_size: 128\nmax_local_cpu_size: 3\n")
    proc = run("config", env={"LMCACHE_CONFIG_FILE": str(path), "LMCACHE_DISK_CAPACITY_GB": "9",
                              "LMCACHE_CONTROL_TOKEN": "do-not-print-me"})
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert re.search(r"128\s+file " + re.escape(str(path)), rows["chunk_size"])
    assert re.search(r"3\.0\s+file ", rows["l1_capacity_gb"])
    assert re.search(r"9\.0\s+env LMCACHE_DISK_CAPACITY_GB", rows["disk_capacity_gb"])
    assert "default" in rows["num_copy_threads"]
    assert "do-not-print-me" not in proc.stdout and "(set)" in rows["control_token"]
    assert "chunk_size (int" in run("config", "--keys").stdout


def test_version():
    proc = run("version")
    assert proc.returncode == 0 and proc.stdout.strip() == lmcache.__version__


@pytest.fixture
def server(tmp_path):
    """`lmcache serve-control` on a disk directory that an engine filled (the
    same model and KV shape), on a free port."""
    disk = tmp_path / "disk"
    cfg = lmcache.Config(chunk_size=16, l1_capacity_gb=0.01, local_disk_path=str(disk), model_id="cli-model")
    with lmcache.CacheEngine(cfg) as e:
        e.register_kv_caches(flash_attn_cache(blocks=16))
        e.store(DOC, block_ids=list(range(8)))
        e.flush_writes()
    env = {"LMCACHE_CHUNK_SIZE": "16", "LMCACHE_L1_CAPACITY_GB": "0.01", "LMCACHE_LOCAL_DISK_PATH": str(disk),
           "LMCACHE_MODEL_ID": "cli-model"}
    base = {k: v for k, v in os.environ.items() if not k.startswith("LMCACHE_")}
    proc = subprocess.Popen([LMCACHE, "serve-control", "--port", "0", "--kv-shape", "2,2,32,float32"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**base, **env})
    line = proc.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
    yield match.group(1)
    proc.terminate()
    assert proc.wait(timeout=20) == 0


def test_control_commands_against_a_serving_process(server):
    tokens = ",".join(map(str, DOC))
    out = run("health", "--url", server)
    assert out.returncode == 0 and '"ok"' in out.stdout
    out = run("lookup", "--url", server, "--tokens", tokens)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("64 of 64 tokens cached") and "host memory 0, disk 64" in out.stdout
    assert "host memory 64" in run("prefetch", "--url", server, "--tokens", tokens).stdout.replace(
        "64 leading tokens in host memory", "host memory 64")
    assert run("lookup", "--url", server, "--tokens-file", "-", input=str(DOC)).stdout.count("host memory 64") == 1
    assert run("pin", "--url", server, "--tokens", tokens).stdout.strip() == "pinned 4 chunks"
    assert run("evict", "--url", server, "--tokens", tokens).stdout.strip() == "removed 0 records"  # pinned
    assert run("pin", "--unpin", "--url", server, "--tokens", tokens).stdout.strip() == "unpinned 4 chunks"
    assert run("evict", "--url", server, "--tokens", tokens).stdout.strip() == "removed 4 records"
    stats = run("stats", "--url", server)
    assert stats.returncode == 0 and "main:" in stats.stdout and "disk_records" in stats.stdout
    assert run("clear", "--url", server, "--model", "other-model").stdout.strip() == "removed 0 records from no cache"
    out = run("clear", "--url", server)
    assert out.returncode == 0 and out.stdout.strip() == "removed 4 records from main"
    assert run("lookup", "--url", server, "--tokens", tokens).stdout.startswith("0 of 64")


def test_errors_are_one_line(server):
    assert "cannot reach the control API" in one_line_error(run("stats", "--url", "http://127.0.0.1:1"))
    assert "not a list of token ids" in one_line_error(run("lookup", "--url", server, "--tokens", "1,x"))
    assert "2**32" in one_line_error(run("pin", "--url", server, "--tokens", "[-1]"))
    assert "no control API given" in one_line_error(run("stats"))
    assert "HTTP 404" in one_line_error(run("lookup", "--url", server, "--tokens", "1", "--cache", "nope"))
    assert "--kv-shape" in one_line_error(run("serve-control", "--port", "0", "--kv-shape", "2,2"))
    bad = one_line_error(run("config", env={"LMCACHE_CHUNK_SIZE": "many"}))
    assert "chunk_size" in bad


def test_a_non_loopback_serve_control_without_a_token_is_refused():
    assert "requires control_token" in one_line_error(run("serve-control", "--host", "0.0.0.0", "--port", "0"))
