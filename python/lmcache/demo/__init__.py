"""`lmcache demo`: a real vLLM engine answering questions about long documents,
with and without lmcache (host memory + local disk), and the time to first
token of each; then a new engine process on the same disk directory.

Workload: several 4K-8K-token documents, several short questions about each,
asked in mixed order (a document comes back after others were asked about),
as in document QA or RAG serving. vLLM's own prefix cache is off in every run
so that the table shows what lmcache alone does.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile

from lmcache.demo.models import BENCH_BF16, make_llama


def build_workload(doc_lengths: list[int], questions_per_doc: int, question_len: int, vocab: int,
                   seed: int = 0) -> list[tuple[int, list[int]]]:
    rng = random.Random(seed)
    docs = [[rng.randrange(1, vocab) for _ in range(n)] for n in doc_lengths]
    asks = [(d, [rng.randrange(1, vocab) for _ in range(question_len)])
            for d in range(len(docs)) for _ in range(questions_per_doc)]
    rng.shuffle(asks)
    return [(d, docs[d] + q) for d, q in asks]


def run_demo(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="lmcache demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--doc-lengths", default="4096,6144,8192", help="document lengths in tokens")
    ap.add_argument("--questions", type=int, default=3, help="questions per document")
    ap.add_argument("--model-dir", default=os.path.join(tempfile.gettempdir(), "lmcache-demo-llama"))
    ap.add_argument("--l1-gb", type=float, default=4.0, help="lmcache host-memory tier size")
    ap.add_argument("--disk-dir", default=os.path.join(tempfile.gettempdir(), "lmcache-demo-disk"),
                    help="lmcache local disk tier (emptied at the start of the demo)")
    ap.add_argument("--chart", default="lmcache-demo-ttft.png",
                    help="write a bar chart of the TTFT table here (default: %(default)s; '' for none)")
    args = ap.parse_args(argv)

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # keep the demo's output readable
    from tqdm import tqdm

    from lmcache.demo.vllm_runs import make_llm, shutdown, time_first_token

    shape = BENCH_BF16
    print(f"lmcache demo: random-weight Llama ({shape.layers} layers, hidden {shape.hidden}, "
          f"{shape.kv_heads} KV heads, {shape.dtype}) on vLLM (CPU)", flush=True)
    model = make_llama(args.model_dir, shape)
    lengths = [int(x) for x in args.doc_lengths.split(",")]
    workload = build_workload(lengths, args.questions, 64, shape.vocab)
    print(f"workload: {len(lengths)} documents of {args.doc_lengths} tokens, {args.questions} questions each, "
          f"{len(workload)} requests in mixed order", flush=True)

    def run(llm, label):
        return [time_first_token(llm, p) for _, p in tqdm(workload, desc=label, unit="req")]

    llm = make_llm(model, lmcache=None)
    time_first_token(llm, workload[0][1][:512])  # warm-up: first-request costs are not TTFT
    without = run(llm, "without lmcache")
    shutdown(llm)

    import shutil
    import time

    from lmcache.integrations.vllm import query_worker_stats

    # A cold start: only lmcache's own records go, never anything else in the user's directory.
    shutil.rmtree(os.path.join(args.disk_dir, "lmcache-records"), ignore_errors=True)
    cache = {"l1_capacity_gb": args.l1_gb, "local_disk_path": args.disk_dir}
    eid = f"demo-{os.getpid()}-1"
    llm = make_llm(model, lmcache=cache, engine_id=eid)
    time_first_token(llm, workload[0][1][:512][::-1])  # warm-up on tokens the workload never uses
    cold = run(llm, "lmcache, cold")
    warm = run(llm, "lmcache, warm")
    def written(s):  # every chunk stored in host memory has reached the disk, or was dropped
        return s["disk_writes"] + s["write_behind_dropped"] + s["disk_write_errors"] >= s["stored_chunks"]

    deadline = time.monotonic() + 120
    while not written(query_worker_stats(eid)) and time.monotonic() < deadline:
        time.sleep(0.2)  # the write-behind is asynchronous
    shutdown(llm)

    # A new engine process on the same disk directory: its host memory is empty.
    llm = make_llm(model, lmcache=cache, engine_id=f"demo-{os.getpid()}-2")
    time_first_token(llm, workload[0][1][:512][::-1])
    restart = run(llm, "lmcache, new process")
    shutdown(llm)

    base = statistics.mean(t.ttft_s for t in without)
    print()
    print(f"{'run':22} {'mean TTFT':>10} {'median':>9} {'hit rate':>9} {'speed-up':>9}")
    chart_rows = []
    for label, rows in (("without lmcache", without), ("with lmcache, cold", cold), ("with lmcache, warm", warm),
                        ("lmcache, new process", restart)):
        mean = statistics.mean(t.ttft_s for t in rows)
        med = statistics.median(t.ttft_s for t in rows)
        hit = sum(t.cached_tokens for t in rows) / sum(t.prompt_tokens for t in rows)
        print(f"{label:22} {mean * 1e3:8.0f}ms {med * 1e3:7.0f}ms {hit:9.1%} {base / mean:8.1f}x")
        chart_rows.append((label, mean * 1e3, med * 1e3))
    same = sum(a.output_ids == b.output_ids for a, b in zip(without, warm))
    print(f"\nfirst tokens equal to the run without lmcache: {same}/{len(workload)} (bf16; a cached run "
          "recomputes a shorter tail, so rare near-ties may flip)")
    print("cold: each document's first question computes it and lmcache stores it; later questions reuse it.")
    print("warm: every document is already in lmcache (host memory).")
    print("new process: a fresh engine on the same disk directory; documents come from disk.")
    print(f"Hit rate = prompt tokens served from lmcache. Disk tier: {args.disk_dir}")
    if args.chart:
        from lmcache.demo.chart import write_ttft_chart

        if write_ttft_chart(chart_rows, args.chart):
            print(f"TTFT chart: {os.path.abspath(args.chart)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_demo(sys.argv[1:]))
