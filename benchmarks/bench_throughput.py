"""Multi-round QA throughput when the documents do not fit in the engine's own
KV memory: vLLM's prefix cache alone, lmcache embedded in the engine, and two
engines sharing one `lmcache server`.

Workload: --users concurrent users (default 8), each with a document of
--doc-tokens random token ids (default 4096, distinct per user) and a
conversation of --rounds rounds (default 4). Round r's prompt is the document,
the previous rounds' questions and answers, and a new 64-token question; an
answer is 32 tokens (temperature 0, ignore_eos). Every user sends its round r,
waits for the answer, then sends round r+1 (an online-serving pattern: the
users do not wait for one another). The engine's KV pool is cut to one
conversation's worth of blocks (num_gpu_blocks_override), so the documents
together are ~7-8x what it holds and vLLM's prefix cache keeps evicting them.

Requests go through vLLM's AsyncLLM (v1); TTFT is the time from handing a
request to AsyncLLM.generate to the arrival of its first output (one token).
Throughput is requests / wall time from the first submission to the last
answer. Bench model: bench_vllm.py's (random Llama, 8 layers, hidden 512, bf16).
Each configuration runs in its own process with VLLM_CPU_NUM_OF_RESERVED_CPU=1;
`server` runs two engine processes at once (half the users each) next to an
`lmcache server --socket PATH` process, and is skipped where lmcache.server
does not exist yet.

    python benchmarks/bench_throughput.py --json throughput.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Optional

os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "1"

from report import report  # noqa: E402  (benchmarks/report.py)

CONFIGS = ("vllm", "lmcache", "server")
LMCACHE_CONFIG = {"l1_capacity_gb": 4}
QUESTION_TOKENS = 64
ANSWER_TOKENS = 32
BLOCK = 128  # vLLM's CPU block size for this model (platforms/cpu.py: 128 unless set)
VOCAB = 2048  # BENCH_BF16's vocabulary


def tokens(seed: int, n: int, vocab: int = VOCAB) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1, vocab) for _ in range(n)]


def pool_shape(doc_tokens: int, rounds: int) -> tuple[int, int]:
    """(max_model_len, num_gpu_blocks_override): the longest conversation
    (document, every question and answer) rounded up to whole blocks, and a
    pool of exactly that many usable blocks (+1: vLLM's block pool keeps one
    null block back), the least vLLM accepts for that max_model_len."""
    longest = doc_tokens + rounds * (QUESTION_TOKENS + ANSWER_TOKENS)
    blocks = -(-longest // BLOCK)
    return blocks * BLOCK, blocks + 1


def server_available() -> bool:
    return subprocess.run([sys.executable, "-c", "import lmcache.server"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


# ---------------------------------------------------------------- child: one engine

class _Counters:
    """vLLM's per-iteration stats, summed: where the prompt tokens came from
    (computed, vLLM's prefix cache, the KV connector), preemptions, and
    lmcache's connector counters (loaded / stored tokens)."""

    totals: dict = {}

    @classmethod
    def factory(cls):
        from vllm.v1.metrics.loggers import StatLoggerBase

        totals = cls.totals

        class Logger(StatLoggerBase):
            def __init__(self, vllm_config, engine_index: int = 0):
                pass

            def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
                def add(key, value):
                    totals[key] = totals.get(key, 0) + int(value or 0)

                if iteration_stats is not None:
                    p = iteration_stats.prompt_token_stats
                    add("prompt_computed_tokens", p.computed)
                    add("prompt_vllm_cache_tokens", p.local_cache_hit)
                    add("prompt_connector_tokens", p.external_kv_transfer)
                    add("preemptions", iteration_stats.num_preempted_reqs)
                if scheduler_stats is not None and scheduler_stats.kv_connector_stats:
                    for k, v in scheduler_stats.kv_connector_stats.items():
                        if isinstance(v, (int, float)) and not isinstance(v, bool):
                            add(f"connector_{k}", v)

            def log_engine_initialized(self):
                pass

        return Logger


def _engine_args(model: str, config: str, doc_tokens: int, rounds: int, socket_path: Optional[str]):
    import uuid

    from vllm.config import KVTransferConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    max_len, blocks = pool_shape(doc_tokens, rounds)
    kw = {}
    if config in ("lmcache", "server"):
        extra = dict(LMCACHE_CONFIG)
        if config == "server":
            extra["server_socket"] = socket_path
        kw["kv_transfer_config"] = KVTransferConfig(
            kv_connector="LMCacheConnector", kv_connector_module_path="lmcache.integrations.vllm",
            kv_role="kv_both", engine_id=f"lmcache-{uuid.uuid4()}", kv_connector_extra_config=extra)
    # As lmcache.demo.vllm_runs.make_llm, with the pool cut to `blocks` blocks.
    return AsyncEngineArgs(model=model, skip_tokenizer_init=True, enforce_eager=True, gpu_memory_utilization=0.2,
                           enable_prefix_caching=True, max_model_len=max_len, seed=0,
                           max_num_batched_tokens=max_len, num_gpu_blocks_override=blocks,
                           block_size=BLOCK, **kw)


async def _run_engine(args, progress) -> dict:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.v1.engine.async_llm import AsyncLLM

    engine = AsyncLLM.from_engine_args(_engine_args(args.model, args.config, args.doc_tokens, args.rounds,
                                                    args.socket), stat_loggers=[_Counters.factory()])
    sp = SamplingParams(max_tokens=ANSWER_TOKENS, temperature=0.0, ignore_eos=True)

    async def ask(rid: str, prompt: list[int]) -> tuple[float, float, float, list[int], int]:
        t0 = time.time()
        first = None
        out = None
        async for out in engine.generate(TokensPrompt(prompt_token_ids=prompt), sp, rid):
            if first is None and out.outputs and out.outputs[0].token_ids:
                first = time.time()
        return t0, first, time.time(), list(out.outputs[0].token_ids), out.num_cached_tokens or 0

    await ask("warmup", tokens(999, 300))
    _Counters.totals.clear()
    progress("ready")
    # "go" from the parent: the two engines of `server` start together.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    users = [int(u) for u in args.user_ids.split(",")]
    records: list[dict] = []

    async def converse(u: int) -> None:
        history = tokens(10_000 + u, args.doc_tokens)
        for r in range(args.rounds):
            prompt = history + tokens(1_000_000 + 1000 * u + r, QUESTION_TOKENS)
            t0, first, end, answer, cached = await ask(f"u{u}-r{r}", prompt)
            records.append({"user": u, "round": r, "submit": t0, "first": first, "end": end,
                            "prompt_tokens": len(prompt), "cached_tokens": cached})
            progress(f"done {r} {u} {(first - t0) * 1e3:.1f}")
            history = prompt + answer

    start = time.time()
    await asyncio.gather(*(converse(u) for u in users))
    out = {"records": records, "start": start, "end": time.time(), "counters": dict(_Counters.totals)}
    engine.shutdown()
    return out


def child(args) -> None:
    pipe = os.fdopen(args.progress_fd, "w", buffering=1)

    def progress(line: str) -> None:
        pipe.write(line + "\n")

    out = asyncio.run(_run_engine(args, progress))
    with open(args.child_out, "w") as f:
        json.dump(out, f)
    progress("finished")
    pipe.close()
    os._exit(0)  # skip the engine's slow interpreter-exit teardown


# ---------------------------------------------------------------- parent

def _pct(values: list[float], q: float) -> float:
    """Percentile with linear interpolation (q in 0..100)."""
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    pos = (len(v) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def run_config(config: str, args, cfg_bar) -> dict:
    """Runs one configuration: one engine process, or (server) an lmcache
    server and two engine processes with half the users each."""
    from tqdm import tqdm

    users = list(range(args.users))
    groups = [users] if config != "server" else [users[0::2], users[1::2]]
    tmp = tempfile.mkdtemp(prefix=f"lmcache-tp-{config}-")
    socket_path = os.path.join(tmp, "lmcache.sock")
    env = {**os.environ, "VLLM_CPU_NUM_OF_RESERVED_CPU": "1"}
    server = None
    if config == "server":
        server_env = {**env, **{f"LMCACHE_{k.upper()}": str(v) for k, v in LMCACHE_CONFIG.items()}}
        server_log = open(os.path.join(tmp, "server.log"), "w")
        server = subprocess.Popen(["lmcache", "server", "--socket", socket_path], env=server_env,
                                  stdout=server_log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while not os.path.exists(socket_path):
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"lmcache server did not start; see {server_log.name}")
            time.sleep(0.2)

    procs = []
    round_bars: dict = {}
    lock = threading.Lock()
    ready = [0]
    failed: list[str] = []

    def reader(stream) -> None:
        for line in stream:
            word, *rest = line.split()
            with lock:
                if word == "ready":
                    ready[0] += 1
                    cfg_bar.set_postfix_str(f"{config}: {ready[0]}/{len(groups)} engine(s) ready")
                elif word == "done":
                    bar = round_bars.get(int(rest[0]))
                    if bar is not None:
                        bar.set_postfix_str(f"last TTFT {float(rest[2]):.0f} ms", refresh=False)
                        bar.update(1)
        stream.close()

    threads = []
    for i, group in enumerate(groups):
        rfd, wfd = os.pipe()
        log = open(os.path.join(tmp, f"engine{i}.log"), "w")
        cmd = [sys.executable, os.path.abspath(__file__), "--config", config, "--child-out",
               os.path.join(tmp, f"engine{i}.json"), "--progress-fd", str(wfd), "--user-ids",
               ",".join(map(str, group)), "--rounds", str(args.rounds), "--doc-tokens", str(args.doc_tokens),
               "--model", args.model, "--socket", socket_path]
        p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                             pass_fds=(wfd,), text=True)
        os.close(wfd)
        procs.append((p, log))
        t = threading.Thread(target=reader, args=(os.fdopen(rfd),), daemon=True)
        t.start()
        threads.append(t)

    cfg_bar.set_postfix_str(f"{config}: starting {len(groups)} engine(s)")
    # Wait until every engine is up (or one died), then start them together.
    while ready[0] < len(groups):
        if any(p.poll() is not None for p, _ in procs):
            failed.append("an engine process exited during start-up")
            break
        time.sleep(0.2)
    if not failed:
        with lock:  # one bar per round; the users move through them at their own pace
            for r in range(args.rounds):
                round_bars[r] = tqdm(total=args.users, desc=f"  {config} round {r + 1}/{args.rounds}",
                                     unit="req", leave=False, position=1 + r)
        for p, _ in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        cfg_bar.set_postfix_str(f"{config}: running")
    for p, log in procs:
        if failed:
            p.kill()
        p.wait()
        log.close()
    for t in threads:
        t.join(timeout=5)
    for bar in round_bars.values():
        bar.close()
    if server is not None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server_log.close()
    bad = [i for i, (p, _) in enumerate(procs) if p.returncode != 0]
    if failed or bad:
        for i in bad or range(len(procs)):
            tail = open(os.path.join(tmp, f"engine{i}.log")).read()[-3000:]
            print(f"--- {config} engine {i} log (tail) ---\n{tail}", file=sys.stderr)
        raise RuntimeError(f"{config}: engine process failed (logs in {tmp})")

    parts = [json.load(open(os.path.join(tmp, f"engine{i}.json"))) for i in range(len(groups))]
    shutil.rmtree(tmp, ignore_errors=True)  # kept (logs) only when a process failed
    records = [rec for part in parts for rec in part["records"]]
    counters: dict = {}
    for part in parts:
        for k, v in part["counters"].items():
            counters[k] = counters.get(k, 0) + v
    t0 = min(p["start"] for p in parts)
    wall = max(p["end"] for p in parts) - t0
    ttft = [(rec["first"] - rec["submit"]) * 1e3 for rec in records]
    later = [(rec["first"] - rec["submit"]) * 1e3 for rec in records if rec["round"] > 0]
    return {
        "rps": len(records) / wall,
        "wall_s": wall,
        "requests": len(records),
        "ttft_p50_ms": statistics.median(ttft),
        "ttft_p90_ms": _pct(ttft, 90),
        "ttft_p50_later_ms": statistics.median(later) if later else None,
        "ttft_p90_later_ms": _pct(later, 90) if later else None,
        # Time from the first token to the last of a request (31 decode steps): what
        # the scheduler's work between steps (e.g. lookups for waiting requests) adds.
        "decode_p50_ms": statistics.median((rec["end"] - rec["first"]) * 1e3 for rec in records),
        "ttft_p50_by_round_ms": [statistics.median((rec["first"] - rec["submit"]) * 1e3 for rec in records
                                                   if rec["round"] == r) for r in range(args.rounds)],
        "counters": counters,
        # One row per request: user, round, submitted (s after the start), TTFT (ms),
        # end-to-end (ms), prompt tokens, cached tokens (vLLM's cache + the connector's).
        "request_log": [[rec["user"], rec["round"], round(rec["submit"] - t0, 3),
                      round((rec["first"] - rec["submit"]) * 1e3, 1), round((rec["end"] - rec["submit"]) * 1e3, 1),
                      rec["prompt_tokens"], rec["cached_tokens"]]
                     for rec in sorted(records, key=lambda rec: rec["submit"])],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--doc-tokens", type=int, default=4096)
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma-separated subset of {','.join(CONFIGS)} (default: all)")
    ap.add_argument("--model-dir", default=os.path.join(tempfile.gettempdir(), "lmcache-bench-llama"))
    # child mode
    ap.add_argument("--config", choices=CONFIGS, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("--progress-fd", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--user-ids", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--socket", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.config:
        child(args)
        return

    from tqdm import tqdm

    from lmcache.demo.models import BENCH_BF16, make_llama

    args.model = make_llama(args.model_dir, BENCH_BF16)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs:
        if c not in CONFIGS:
            ap.error(f"unknown configuration {c!r} (choose from {', '.join(CONFIGS)})")
    max_len, blocks = pool_shape(args.doc_tokens, args.rounds)
    engine_kv = (blocks - 1) * BLOCK
    print(f"{args.users} users x {args.rounds} rounds, {args.doc_tokens}-token documents; engine KV pool "
          f"{blocks} blocks of {BLOCK} ({engine_kv} usable tokens), max_model_len {max_len}; documents = "
          f"{args.users * args.doc_tokens / engine_kv:.2f}x the pool", flush=True)

    per: dict = {}
    skipped: dict = {}
    bar = tqdm(configs, desc="configurations", unit="config", position=0)
    for config in bar:
        bar.set_postfix_str(config)
        if config == "server" and not server_available():
            skipped[config] = "lmcache.server is not importable (the `lmcache server` command is not there yet)"
            tqdm.write(f"server: skipped: {skipped[config]}; its keys are null")
            continue
        per[config] = run_config(config, args, bar)
        p = per[config]
        tqdm.write(f"{config}: {p['rps']:.3f} req/s ({p['requests']} requests in {p['wall_s']:.1f} s), "
                   f"TTFT p50 {p['ttft_p50_ms']:.0f} ms, p90 {p['ttft_p90_ms']:.0f} ms; "
                   f"per round p50 {[round(x) for x in p['ttft_p50_by_round_ms']]} ms; "
                   f"decode (31 tokens) p50 {p['decode_p50_ms']:.0f} ms")
    bar.close()

    def get(config: str, key: str):
        return per[config][key] if config in per else None

    def ratio(a, b):
        return a / b if a is not None and b else None

    rps_server = get("server", "rps")
    r = {
        "rps_vllm": get("vllm", "rps"),
        "rps_lmcache": get("lmcache", "rps"),
        "rps_server": rps_server,
        "ttft_p50_vllm_ms": get("vllm", "ttft_p50_ms"),
        "ttft_p50_lmcache_ms": get("lmcache", "ttft_p50_ms"),
        "ttft_p50_server_ms": get("server", "ttft_p50_ms"),
        "ttft_p90_vllm_ms": get("vllm", "ttft_p90_ms"),
        "ttft_p90_lmcache_ms": get("lmcache", "ttft_p90_ms"),
        "ttft_p90_server_ms": get("server", "ttft_p90_ms"),
        "rps_lmcache_over_vllm": ratio(get("lmcache", "rps"), get("vllm", "rps")),
        "ttft_p90_lmcache_over_vllm": ratio(get("lmcache", "ttft_p90_ms"), get("vllm", "ttft_p90_ms")),
        # Two engines together against one embedded engine, per engine:
        # (rps_server / 2) / rps_lmcache. 1.0 = each engine as fast as alone.
        "rps_server_per_engine_over_lmcache": ratio(rps_server / 2 if rps_server is not None else None,
                                                    get("lmcache", "rps")),
        # The same figures over rounds 2.. only (round 1 computes every document in every configuration).
        "ttft_p50_later_vllm_ms": get("vllm", "ttft_p50_later_ms"),
        "ttft_p50_later_lmcache_ms": get("lmcache", "ttft_p50_later_ms"),
        "ttft_p90_later_vllm_ms": get("vllm", "ttft_p90_later_ms"),
        "ttft_p90_later_lmcache_ms": get("lmcache", "ttft_p90_later_ms"),
        "ttft_p90_later_lmcache_over_vllm": ratio(get("lmcache", "ttft_p90_later_ms"),
                                                  get("vllm", "ttft_p90_later_ms")),
        "users": args.users,
        "rounds": args.rounds,
        "doc_tokens": args.doc_tokens,
        "engine_kv_tokens": engine_kv,
        "docs_over_engine_kv": args.users * args.doc_tokens / engine_kv,
        "max_model_len": max_len,
        "ttft_measured_by": "AsyncLLM: submit to first streamed output",
        "skipped": skipped,
        "per_config": per,
    }
    # Targets of the issue, reported (never asserted): rps_lmcache >= 10x rps_vllm,
    # ttft_p90_lmcache <= 0.1x ttft_p90_vllm.
    checks = []
    if r["rps_lmcache_over_vllm"] is not None:
        checks.append(("rps_lmcache >= 10 * rps_vllm", r["rps_lmcache_over_vllm"] >= 10))
    if r["ttft_p90_lmcache_over_vllm"] is not None:
        checks.append(("ttft_p90_lmcache_ms <= 0.1 * ttft_p90_vllm_ms", r["ttft_p90_lmcache_over_vllm"] <= 0.1))
    report(r, checks, args.json)


if __name__ == "__main__":
    main()
