"""A soak of one real CacheEngine: worker threads store, look up, load, pin,
clear and flush while a fault thread restarts the Redis server, damages disk
records and forges remote values. Every loaded byte is checked against the KV
the test expects for those tokens.

Used by test_soak.py and by benchmarks/reliability_report.py; needs
tests/python on sys.path (for redis_servers).

What is counted:
- bytes_verified: loaded bytes equal to the expected KV.
- bytes_wrong: loaded bytes that differ from it (never acceptable: a miss is
  fine, wrong KV is not).
- bytes_lost: bytes of tokens a load reported as delivered that it never wrote
  (the destination is filled with NaN before every load, and NaN is never
  expected KV).
- crashes: exceptions escaping a thread's work, and threads that never ended.
  A miss or a shorter load is how the API reports trouble, so it is not one.
"""

from __future__ import annotations

import collections
import os
import random
import threading
import time
import traceback
from pathlib import Path
from typing import Optional

import numpy as np
import torch

import lmcache

# The KV shape: small, so a soak of a minute moves many chunks on two cores.
LAYERS, HEADS, HEAD_DIM = 2, 2, 32
BLOCK_SIZE = CHUNK_SIZE = 16
TOKEN_BYTES = LAYERS * 2 * HEADS * HEAD_DIM * 4  # float32
# Host memory holds a chunk in a slab of its 16 KiB record plus a 4 KiB header page.
SLAB_BYTES = CHUNK_SIZE * TOKEN_BYTES + 4096
L1_SLABS = 48        # far fewer than the pool's distinct chunks: eviction all the time
DISK_RECORDS = 160   # the disk tier evicts too, but keeps more than host memory
MAX_PROMPT = 224     # tokens; every thread's caches hold one prompt of this length
CACHE_BLOCKS = MAX_PROMPT // BLOCK_SIZE
PER_GROUP = 8       # prompts that share a prefix
# A remote tier refuses to start without a secret (at least 16 bytes) that seals its records.
TEST_SECRET = "soak-test-secret-0123456789abcde"

_FNV_OFFSET, _FNV_PRIME, _MASK = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


class Prompt:
    """Token ids and the KV a model would have produced for them."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tokens
        self.kv = expected_kv(tokens)  # [layers, 2, tokens, heads, head_dim]


def expected_kv(tokens: list[int]) -> torch.Tensor:
    """Deterministic KV for `tokens`. Token i's values depend on tokens[0..i]
    (a rolling hash), as a model's do: prompts that share a prefix expect the
    same bytes for it, and a chunk stored under one prefix can never pass as
    another's. Values are 16-bit integers scaled by 1/256, exact in float32."""
    hashes = np.empty(len(tokens), dtype=np.uint64)
    acc = _FNV_OFFSET
    for i, t in enumerate(tokens):
        acc = ((acc ^ (t + 1)) * _FNV_PRIME) & _MASK
        hashes[i] = acc
    index = np.arange(LAYERS * 2 * HEADS * HEAD_DIM, dtype=np.uint64)
    with np.errstate(over="ignore"):  # wrapping uint64 arithmetic is the point
        mixed = (hashes[:, None] ^ (index[None, :] * np.uint64(0x9E3779B97F4A7C15))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (mixed >> np.uint64(48)).astype(np.float32) / 256.0 - 128.0
    kv = torch.from_numpy(values).view(len(tokens), LAYERS, 2, HEADS, HEAD_DIM)
    return kv.permute(1, 2, 0, 3, 4).contiguous()


def make_prompts(rng: random.Random, groups: int = 8, per_group: int = PER_GROUP) -> list[Prompt]:
    """Prompts in groups that share a prefix of 1-4 chunks; lengths are not
    always whole chunks (the tail of a prompt is never stored)."""
    prompts = []
    for _ in range(groups):
        prefix = [rng.randrange(32000) for _ in range(CHUNK_SIZE * rng.randint(1, 4))]
        for _ in range(per_group):
            suffix = [rng.randrange(32000) for _ in range(rng.randint(8, MAX_PROMPT - len(prefix)))]
            prompts.append(Prompt(prefix + suffix))
    return prompts


def kv_cache() -> list[torch.Tensor]:
    """A vLLM flash-attention CPU cache: per layer [2, blocks, block_size, heads, head_dim]."""
    return [torch.zeros(2, CACHE_BLOCKS, BLOCK_SIZE, HEADS, HEAD_DIM) for _ in range(LAYERS)]


def token_view(cache: list[torch.Tensor], n: int) -> list[torch.Tensor]:
    """Per layer, the first n token slots of blocks 0, 1, ... as [2, n, heads, head_dim] (a view)."""
    return [t.view(2, CACHE_BLOCKS * BLOCK_SIZE, HEADS, HEAD_DIM)[:, :n] for t in cache]


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Tally:
    """Counters shared by every thread, and the first few crash tracebacks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: collections.Counter = collections.Counter()
        self.crash_details: list[str] = []

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    def crash(self, where: str) -> None:
        with self.lock:
            self.counts["crashes"] += 1
            if len(self.crash_details) < 5:
                self.crash_details.append(f"{where}: {traceback.format_exc()}")


def verify_load(prompt: Prompt, dst: list[torch.Tensor], n: int, tally: Tally) -> None:
    """Checks the n tokens a load reported against the expected KV, byte for byte."""
    if n < 0 or n > len(prompt.tokens) or n % CHUNK_SIZE:
        raise AssertionError(f"load reported {n} tokens for a prompt of {len(prompt.tokens)}")
    if n == 0:
        return
    got = torch.stack(token_view(dst, n))       # [layers, 2, n, heads, head_dim]
    differs = got != prompt.kv[:, :, :n]        # NaN (the sentinel) differs from everything
    never_written = torch.isnan(got)
    bad = int(differs.sum())
    lost = int(never_written.sum())
    tally.add("bytes_verified", (got.numel() - bad) * 4)
    tally.add("bytes_lost", lost * 4)
    tally.add("bytes_wrong", (bad - lost) * 4)


class Worker:
    """One thread of an engine's users, with its own source and destination caches."""

    def __init__(self, engine: lmcache.CacheEngine, prompts: list[Prompt], seed: int, tally: Tally) -> None:
        self.engine, self.prompts, self.tally = engine, prompts, tally
        self.rng = random.Random(seed)
        self.src, self.dst = kv_cache(), kv_cache()

    def run(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                self.step()
            except Exception:
                self.tally.crash(threading.current_thread().name)

    def op(self, name: str) -> None:
        self.tally.add("operations")
        self.tally.add(f"ops_{name}")

    def step(self) -> None:
        # Half the time one of the few hot prompts (the first of each group: hits
        # are likely), else any prompt (which keeps evicting the hot ones).
        if self.rng.random() < 0.5:
            prompt = self.prompts[PER_GROUP * self.rng.randrange(len(self.prompts) // PER_GROUP)]
        else:
            prompt = self.rng.choice(self.prompts)
        r = self.rng.random()
        if r < 0.01:
            self.op("clear")
            self.engine.clear(include_disk=self.rng.random() < 0.3)
        elif r < 0.02:
            self.op("flush_writes")
            self.engine.flush_writes()
        elif r < 0.05:
            self.pinned_load(prompt)
            return
        if self.rng.random() < 0.6:
            self.store(prompt)
        self.op("lookup")
        hit = self.engine.lookup(prompt.tokens)
        if hit < 0 or hit > len(prompt.tokens) or hit % CHUNK_SIZE:
            raise AssertionError(f"lookup reported {hit} tokens for a prompt of {len(prompt.tokens)}")
        self.load(prompt)

    def blocks(self, prompt: Prompt) -> list[int]:
        return list(range(-(-len(prompt.tokens) // BLOCK_SIZE)))

    def store(self, prompt: Prompt) -> None:
        n = len(prompt.tokens)
        for layer, view in enumerate(token_view(self.src, n)):
            view.copy_(prompt.kv[layer])
        self.op("store")
        if self.rng.random() < 0.3:  # the two-step form engines use for asynchronous stores
            self.engine.begin_store(prompt.tokens, self.src, block_ids=self.blocks(prompt)).finish()
        else:
            self.engine.store(prompt.tokens, self.src, block_ids=self.blocks(prompt))

    def load(self, prompt: Prompt) -> None:
        for view in token_view(self.dst, len(prompt.tokens)):
            view.fill_(float("nan"))
        self.op("load")
        if self.rng.random() < 0.3:  # layer by layer, as a layer-wise engine loads
            with self.engine.begin_load(prompt.tokens, self.dst, block_ids=self.blocks(prompt)) as pending:
                for end in range(1, LAYERS + 1):
                    pending.load_layers(end)
                n = pending.tokens
        else:
            n = self.engine.load(prompt.tokens, self.dst, block_ids=self.blocks(prompt))
        verify_load(prompt, self.dst, n, self.tally)

    def pinned_load(self, prompt: Prompt) -> None:
        self.op("pin")
        self.engine.pin(prompt.tokens)
        try:
            self.load(prompt)
        finally:
            self.op("unpin")
            self.engine.unpin(prompt.tokens)


class FaultThread:
    """Restarts Redis (kill -9, then the same port) a few times, and between
    restarts deletes, truncates or corrupts disk records and corrupts remote
    values or moves them to other keys. Every fault must end as a miss, never
    as wrong or lost KV."""

    def __init__(self, rng: random.Random, disk_dir: Path, redis, seconds: float, tally: Tally) -> None:
        self.rng, self.disk_dir, self.redis, self.tally = rng, disk_dir, redis, tally
        restarts = max(2, min(5, int(seconds // 15)))
        self.restart_at = [seconds * (k + 1) / (restarts + 1) for k in range(restarts)]
        self.client = None
        if redis is not None:
            import redis as redis_py

            self.redis_errors = redis_py.RedisError
            self.client = redis_py.Redis(host="127.0.0.1", port=redis.port, socket_timeout=1.0)

    def run(self, start: float, stop: threading.Event) -> None:
        try:
            while not stop.wait(self.rng.uniform(0.1, 0.4)):
                try:
                    self.one_fault(time.monotonic() - start, stop)
                except Exception:
                    self.tally.crash("fault thread")
        finally:
            if self.redis is not None and self.redis.proc.poll() is not None:
                self.redis.start()  # the final checks run with the server up
            if self.client is not None:
                self.client.close()

    def one_fault(self, elapsed: float, stop: threading.Event) -> None:
        if self.redis is not None and self.restart_at and elapsed >= self.restart_at[0]:
            self.restart_at.pop(0)
            self.redis.kill()  # SIGKILL: no goodbye to the clients
            stop.wait(self.rng.uniform(0.2, 1.0))  # the engine works without it for a while
            self.redis.start()
            self.tally.add("faults_redis_restart")
            return
        kinds = ["disk_delete", "disk_truncate", "disk_corrupt"]
        if self.client is not None:
            kinds += ["remote_corrupt", "remote_move"]
        kind = self.rng.choice(kinds)
        done = self.remote_fault(kind) if kind.startswith("remote") else self.disk_fault(kind)
        if done:
            self.tally.add(f"faults_{kind}")

    def disk_fault(self, kind: str) -> bool:
        records = sorted(self.disk_dir.rglob("*.lmc"))
        if not records:
            return False
        path = self.rng.choice(records)
        try:  # the tier may remove the file first (eviction, clear): then no fault was made
            if kind == "disk_delete":
                path.unlink()
                return True
            size = path.stat().st_size
            if size == 0:
                return False
            if kind == "disk_truncate":
                os.truncate(path, self.rng.randrange(size))
                return True
            with open(path, "r+b") as f:  # flip one byte anywhere: header, seal or payload
                f.seek(self.rng.randrange(size))
                byte = f.read(1)
                if not byte:
                    return False
                f.seek(-1, os.SEEK_CUR)
                f.write(bytes([byte[0] ^ 0xFF]))
            return True
        except FileNotFoundError:
            return False

    def remote_fault(self, kind: str) -> bool:
        """remote_corrupt flips one byte of a value; remote_move copies one
        key's (authentic) value over another key's: both must be refused."""
        try:
            key = self.client.randomkey()
            value = self.client.get(key) if key else None
            if not value:
                return False
            if kind == "remote_move":
                target = self.client.randomkey()
                if target == key:
                    return False
                return bool(self.client.set(target, value, xx=True))  # only over a value that is still there
            i = self.rng.randrange(len(value))
            forged = value[:i] + bytes([value[i] ^ 0xFF]) + value[i + 1:]
            return bool(self.client.set(key, forged, xx=True))
        except self.redis_errors:  # the server is restarting
            return False


def build_engine(workdir: Path, redis_port: Optional[int]) -> lmcache.CacheEngine:
    config = lmcache.Config(
        chunk_size=CHUNK_SIZE,
        l1_capacity_gb=L1_SLABS * SLAB_BYTES / 2**30,
        local_disk_path=str(workdir / "disk"),
        disk_capacity_gb=DISK_RECORDS * SLAB_BYTES / 2**30,
        disk_lock_timeout_s=1.0,
        remote_url=f"redis://127.0.0.1:{redis_port}" if redis_port else "",
        remote_timeout_s=0.5,
        auth_secret=TEST_SECRET,
    )
    engine = lmcache.CacheEngine(config, model_id="soak-model")
    engine.register_kv_caches(kv_cache())
    return engine


def final_check(engine: lmcache.CacheEngine, prompts: list[Prompt], tally: Tally) -> None:
    """After the faults: every prompt once more, alone, still verified byte for byte."""
    worker = Worker(engine, prompts, 0, tally)
    engine.flush_writes()
    for prompt in prompts:
        try:
            worker.op("lookup")
            engine.lookup(prompt.tokens)
            worker.load(prompt)
        except Exception:
            tally.crash("final check")


def run_soak(seconds: float, threads: int, workdir, redis_port: Optional[int], seed: int) -> dict:
    """Runs the soak for `seconds` with `threads` workers in `workdir` (the disk
    tier goes there). With `redis_port`, starts a redis-server on that port for
    the remote tier (and restarts it during the run); stops it at the end."""
    from redis_servers import RedisServer

    workdir = Path(workdir)
    rng = random.Random(seed)
    prompts = make_prompts(rng)
    tally = Tally()
    redis = RedisServer(port=redis_port) if redis_port else None
    engine, stuck = None, False
    rss: list[tuple[float, float]] = []
    try:
        engine = build_engine(workdir, redis_port)
        stop = threading.Event()
        start = time.monotonic()
        deadline = start + seconds
        workers = [Worker(engine, prompts, rng.randrange(1 << 30), tally) for _ in range(threads)]
        faults = FaultThread(random.Random(rng.randrange(1 << 30)), workdir / "disk", redis, seconds, tally)
        running = [threading.Thread(target=w.run, args=(deadline,), name=f"worker-{i}") for i, w in enumerate(workers)]
        fault_thread = threading.Thread(target=faults.run, args=(start, stop), name="faults")
        for t in running + [fault_thread]:
            t.start()
        # This thread samples RSS once a second until the workers are done.
        while time.monotonic() < deadline:
            rss.append((time.monotonic() - start, rss_mib()))
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        rss.append((time.monotonic() - start, rss_mib()))
        stop.set()
        # Every call is bounded (remote timeouts, no waits on other calls), so
        # a thread still running a minute after the deadline is stuck.
        for t in running + [fault_thread]:
            t.join(timeout=60)
            if t.is_alive():
                stuck = True
                tally.add("crashes")
                tally.crash_details.append(f"{t.name}: still running 60 s after the end")
        if not stuck:
            final_check(engine, prompts, tally)
        stats = engine.stats()
    finally:
        if engine is not None and not stuck:
            engine.close()  # after a stuck thread, close() could wait for it forever
        if redis is not None:
            redis.stop()
    return summary(seconds, threads, tally, stats, rss)


def summary(seconds: float, threads: int, tally: Tally, stats: dict, rss: list[tuple[float, float]]) -> dict:
    warm = [mib for t, mib in rss if t >= 0.2 * seconds] or [rss[-1][1]]
    counts = tally.counts
    faults = {k: v for k, v in sorted(counts.items()) if k.startswith("faults_")}
    result = {
        "seconds": seconds,
        "threads": threads,
        "operations": counts["operations"],
        **{k: v for k, v in sorted(counts.items()) if k.startswith("ops_")},
        **faults,
        "faults_injected": sum(faults.values()),
        "bytes_verified": counts["bytes_verified"],
        "bytes_lost": counts["bytes_lost"],
        "bytes_wrong": counts["bytes_wrong"],
        "crashes": counts["crashes"],
        "rss_start_mib": round(warm[0], 1),
        "rss_end_mib": round(warm[-1], 1),
        "rss_growth_mib": round(warm[-1] - warm[0], 1),
        "rss_max_mib": round(max(mib for _, mib in rss), 1),
    }
    # What the engine saw: evictions happened, and the faults were noticed and refused.
    for key in ("evicted_chunks", "disk_evictions", "promoted_chunks", "load_errors", "disk_read_errors",
                "disk_removed_corrupt", "remote_gets", "remote_errors", "remote_bad_values"):
        result[f"engine_{key}"] = int(stats.get(key, 0))
    result["crash_details"] = list(tally.crash_details)
    return result
