"""Cross-engine reuse: a chunk stored from a vLLM-layout cache under SGLang's
key scheme is a page SGLang's backend can load, and the reverse. Same model
id, KV shape, dtype and token ids on both sides; chunk size = page size.

(vLLM's CPU attention arranges its blocks itself, so on this machine the
vLLM side here is a vLLM flash-attention-layout cache, the layout vLLM uses
on GPUs; the engine-level check of the key scheme in vLLM is
tests/python/integrations/vllm::test_sglang_key_scheme_serves_hits_too.)"""

import pytest

pytest.importorskip("sglang", reason="runs in the SGLang venv (scripts/test.sh)")

import torch  # noqa: E402
from test_sglang_backend import P, backend, host_pool, page_keys  # noqa: E402

import lmcache  # noqa: E402
from lmcache.keys import sglang_page_hashes  # noqa: E402

L, H, D = 2, 2, 64  # as host_pool(False, ...)


def vllm_side(disk):
    cfg = lmcache.Config(chunk_size=P, l1_capacity_gb=0.02, local_disk_path=str(disk), model_id="org/tiny-model")
    return lmcache.CacheEngine(cfg, tp_rank=0, tp_size=1)


def test_our_sglang_hash_is_sglangs():
    tokens = list(range(1000, 1000 + 5 * P))
    assert sglang_page_hashes(tokens, P) == page_keys(tokens)
    assert sglang_page_hashes(tokens + [1, 2, 3], P) == page_keys(tokens)  # whole pages only


def test_vllm_layout_to_sglang_and_back(tmp_path):
    tokens = list(range(2000, 2000 + 3 * P))
    ids = sglang_page_hashes(tokens, P)
    kv = [torch.randn(2, 8, P, H, D).to(torch.bfloat16) for _ in range(L)]  # vLLM flash-attention layout
    with vllm_side(tmp_path) as v:
        v.register_kv_caches(kv, "vllm_flash_attn")
        slots = torch.cat([torch.arange(b * P, (b + 1) * P) for b in (5, 2, 7)])
        assert v.store(v.keys_from_ids(ids), slot_mapping=slots) == 3 * P
    # SGLang, with its own page hashes of the same tokens, finds and loads the pages.
    host = host_pool(False, "page_first")
    b = backend(host, local_disk_path=str(tmp_path))
    assert b.batch_exists(page_keys(tokens)) == 3
    dst = host.alloc(3 * P)
    assert b.batch_get_v1(page_keys(tokens), dst) == [True] * 3
    for page, blk in zip(dst[::P], (5, 2, 7)):
        got = host.get_data_page(int(page), flat=True).view(2, P, L, H, D)  # page_first: [2, P, L, H, D]
        want = torch.stack([torch.stack([kv[l][p, blk] for l in range(L)], dim=1) for p in range(2)])
        assert torch.equal(got, want)
    # And the reverse: SGLang stores new pages, the vLLM-layout side loads them.
    more = list(range(5000, 5000 + 2 * P))
    src = host.alloc(2 * P)
    host.kv_buffer.view(-1).normal_()
    assert b.batch_set_v1(page_keys(more), src) == [True, True]
    pages = [host.get_data_page(int(i), flat=True).clone().view(2, P, L, H, D) for i in src[::P]]
    b.close()
    with vllm_side(tmp_path) as v:
        out = [torch.zeros(2, 8, P, H, D, dtype=torch.bfloat16) for _ in range(L)]
        v.register_kv_caches(out, "vllm_flash_attn")
        assert v.load(v.keys_from_ids(sglang_page_hashes(more, P)), slot_mapping=torch.arange(2 * P)) == 2 * P
        for j, page in enumerate(pages):
            for l in range(L):
                assert torch.equal(out[l][:, j], page[:, :, l])
