"""Two real vLLM CPU engines attached to one `lmcache server` (started by
test_vllm_server.py): what the first stores, the second hits. Prints one
JSON line of results.

    python server_driver.py MODEL_DIR SOCKET_PATH
"""

from __future__ import annotations

import json
import os
import sys
import uuid

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")


def main() -> None:
    model, sock = sys.argv[1], sys.argv[2]
    from driver import generate, make_llm, prompt

    from lmcache.demo.vllm_runs import shutdown
    from lmcache.integrations.vllm import query_worker_stats

    doc, other = prompt(1, 2304), prompt(7, 1280)
    res: dict = {}
    llm = make_llm(model, None)
    res["baseline"] = generate(llm, [doc, other])
    shutdown(llm)

    extra = {"chunk_size": 256, "server_socket": sock}
    e1, e2 = f"srv1-{uuid.uuid4()}", f"srv2-{uuid.uuid4()}"
    llm1 = make_llm(model, extra, e1)
    llm2 = make_llm(model, extra, e2)  # both engines alive, one server
    res["engine1"] = generate(llm1, [doc])[0]
    res["engine2"] = generate(llm2, [doc])[0]
    res["engine2_other"] = generate(llm2, [other])[0]
    res["engine1_other"] = generate(llm1, [other])[0]
    res["stats1"] = query_worker_stats(e1)
    res["stats2"] = query_worker_stats(e2)
    shutdown(llm1)
    shutdown(llm2)

    # Tensor parallel 2 on the same server: each rank attaches and keeps its
    # heads under keys of its own (one core per rank here).
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "0|1"
    e3 = f"srv-tp2-{uuid.uuid4()}"
    llm3 = make_llm(model, extra, e3, tp=2)
    res["tp2"] = [generate(llm3, [doc])[0] for _ in range(2)]
    res["stats_tp2"] = [query_worker_stats(e3, rank) for rank in (0, 1)]
    shutdown(llm3)
    print("RESULTS " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
