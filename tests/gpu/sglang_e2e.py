"""End-to-end SGLang + lmcache, for a machine with a GPU and SGLang installed
(SGLang's server does not start on a CPU-only machine from PyPI's wheels: there
is no CPU build of sgl-kernel). Not run by CI.

A first server computes a long prompt; its HiCache backend (lmcache, host
memory + local disk) stores the pages. A second, fresh server on the same
disk directory must serve the prompt from storage (cached_tokens > 0) with
the same greedy output.

    python tests/gpu/sglang_e2e.py [--model-dir DIR]      # exit code 0 = pass
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def serve(model: str, disk: str):
    port = free_port()
    extra = {"backend_name": "lmcache", "module_path": "lmcache.integrations.sglang",
             "class_name": "LMCacheHiCacheStorage", "interface_v1": 1,
             "lmcache": {"l1_capacity_gb": 2, "local_disk_path": disk, "chunk_size": 64}}
    proc = subprocess.Popen([sys.executable, "-m", "sglang.launch_server", "--model-path", model, "--host",
                             "127.0.0.1", "--port", str(port), "--skip-tokenizer-init", "--page-size", "64",
                             "--enable-hierarchical-cache", "--hicache-storage-backend", "dynamic",
                             "--hicache-storage-backend-extra-config", json.dumps(extra),
                             "--mem-fraction-static", "0.3"])
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(2)
    proc.kill()
    raise SystemExit("the SGLang server did not start")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=tempfile.mkdtemp(prefix="lmcache-sglang-model-"))
    args = ap.parse_args()
    from lmcache.demo.models import BENCH_BF16, make_llama

    model = make_llama(args.model_dir, BENCH_BF16)
    disk = tempfile.mkdtemp(prefix="lmcache-sglang-disk-")
    prompt = [random.Random(0).randrange(1, 2048) for _ in range(4096)]
    body = {"input_ids": prompt, "sampling_params": {"max_new_tokens": 8, "temperature": 0}}
    outs = []
    try:
        for run in ("first server", "fresh server, same disk"):
            proc, url = serve(model, disk)
            try:
                # Twice: the storage prefetch may be best-effort for the first request.
                for _ in range(2):
                    out = post(url + "/generate", body)
                    outs.append(out)
                    print(f"{run}: cached_tokens={out['meta_info'].get('cached_tokens')} ids={out['output_ids']}")
                    time.sleep(5)  # let the write-through reach lmcache and its disk tier
            finally:
                proc.terminate()
                proc.wait(60)
    finally:
        shutil.rmtree(disk, ignore_errors=True)
    fresh = outs[2:]
    ok = (max(o["meta_info"].get("cached_tokens", 0) for o in fresh) >= 2048
          and all(o["output_ids"] == outs[0]["output_ids"] for o in fresh))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
