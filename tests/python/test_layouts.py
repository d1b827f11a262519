"""Every named layout, through torch tensors: describe, store, load, compare."""

import numpy as np
import pytest
import torch

import lmcache
from lmcache.errors import InvalidArgumentError
from lmcache.layouts import describe

L, H, D, BS, NB = 3, 2, 32, 8, 16


def token_view(layout, cache, layer, slot):
    """The (planes, heads, dim) vectors of one token, by plain indexing."""
    b, t = divmod(slot, BS)
    if layout == "vllm_flash_attn":
        return cache[layer][:, b, t]
    if layout == "vllm_flashinfer":
        return cache[layer][b, :, t]
    if layout == "vllm_flashinfer_hnd":
        return cache[layer][b, :, :, t]
    if layout == "vllm_mla":
        return cache[layer][b, t]
    if layout == "sglang_layer_first":
        return cache[:, layer, slot]
    if layout == "sglang_page_first":
        return cache[:, slot, layer]
    if layout == "sglang_page_first_direct":
        return cache[:, b, layer, t]
    if layout == "sglang_mla_layer_first":
        return cache[layer, slot]
    if layout == "sglang_mla_page_first":
        return cache[slot, layer]
    if layout == "sglang_mla_page_first_direct":
        return cache[b, layer, t]
    raise AssertionError(layout)


def make(layout, dtype, fill):
    new = (lambda *s: torch.randn(*s).to(dtype)) if fill else (lambda *s: torch.zeros(*s, dtype=dtype))
    S = NB * BS
    return {
        "vllm_flash_attn": lambda: [new(2, NB, BS, H, D) for _ in range(L)],
        "vllm_flashinfer": lambda: [new(NB, 2, BS, H, D) for _ in range(L)],
        "vllm_flashinfer_hnd": lambda: [new(NB, 2, H, BS, D) for _ in range(L)],
        "vllm_mla": lambda: [new(NB, BS, D) for _ in range(L)],
        "sglang_layer_first": lambda: new(2, L, S, H, D),
        "sglang_page_first": lambda: new(2, S, L, H, D),
        "sglang_page_first_direct": lambda: new(2, NB, L, BS, H, D),
        "sglang_mla_layer_first": lambda: new(L, S, 1, D),
        "sglang_mla_page_first": lambda: new(S, L, 1, D),
        "sglang_mla_page_first_direct": lambda: new(NB, L, BS, 1, D),
    }[layout]()


LAYOUTS = [
    "vllm_flash_attn",
    "vllm_flashinfer",
    "vllm_flashinfer_hnd",
    "vllm_mla",
    "sglang_layer_first",
    "sglang_page_first",
    "sglang_page_first_direct",
    "sglang_mla_layer_first",
    "sglang_mla_page_first",
    "sglang_mla_page_first_direct",
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_round_trip(layout, dtype):
    src, dst = make(layout, dtype, True), make(layout, dtype, False)
    toks = list(range(1000, 1040))
    src_blocks, dst_blocks = [5, 2, 9, 0, 14], [1, 3, 4, 6, 7]
    with lmcache.CacheEngine(lmcache.Config(chunk_size=16, l1_capacity_gb=0.01), model_id="m") as e:
        e.register_kv_caches(src, layout, block_size=BS)
        assert e.store(toks, block_ids=src_blocks) == 32
        assert e.load(toks, dst, layout=layout, block_size=BS, block_ids=dst_blocks) == 32
    for i in range(40):
        s_slot = src_blocks[i // BS] * BS + i % BS
        d_slot = dst_blocks[i // BS] * BS + i % BS
        for layer in range(L):
            got = token_view(layout, dst, layer, d_slot)
            if i < 32:
                assert torch.equal(got, token_view(layout, src, layer, s_slot)), (i, layer)
            else:
                assert not got.any()  # the partial last chunk is not stored


def test_permuted_view_is_described_by_its_strides():
    # An HND cache handed over as an NHD view (vLLM does this): same logical
    # indexing as flashinfer NHD, other strides; must round-trip like a plain one.
    hnd = [torch.randn(NB, 2, H, BS, D) for _ in range(L)]
    view = [t.permute(0, 1, 3, 2, 4) for t in hnd]  # (NB, 2, BS, H, D), not contiguous
    plain = [v.contiguous() for v in view]
    lay = describe(view, "vllm_flashinfer")
    assert lay.num_heads == H and lay.head_dim == D and lay.block_size == BS
    toks = list(range(32))
    with lmcache.CacheEngine(lmcache.Config(chunk_size=16, l1_capacity_gb=0.01), model_id="m") as e:
        e.register_kv_caches(view, "vllm_flashinfer")
        e.store(toks, block_ids=[3, 4, 5, 6])
        out = [torch.zeros_like(p) for p in plain]  # load into a plain NHD cache
        assert e.load(toks, out, layout="vllm_flashinfer", block_ids=[3, 4, 5, 6]) == 32
    for p, o in zip(plain, out):
        assert torch.equal(p[3:7], o[3:7])


def test_vllm_cpu_opaque_blocks_move_whole():
    # vLLM's CPU attention cache: (blocks, heads, block_size, 2*dim), arranged by its kernel.
    src = [torch.randn(NB, H, BS, 2 * D) for _ in range(L)]
    dst = [torch.zeros_like(t) for t in src]
    toks = list(range(32))
    with lmcache.CacheEngine(lmcache.Config(chunk_size=16, l1_capacity_gb=0.01), model_id="m") as e:
        lay = e.register_kv_caches(src, "vllm_cpu")
        assert lay.opaque_block_bytes == H * BS * 2 * D * 4 and lay.head_dim == D
        e.store(toks, block_ids=[7, 1, 12, 3])
        assert e.load(toks, dst, block_ids=[0, 2, 4, 6]) == 32
    for s, d in zip(src, dst):
        assert torch.equal(d[[0, 2, 4, 6]], s[[7, 1, 12, 3]])
    # Its keys never collide with a token-major cache of the same shape.
    with lmcache.CacheEngine(lmcache.Config(chunk_size=16, l1_capacity_gb=0.01), model_id="m") as a, \
         lmcache.CacheEngine(lmcache.Config(chunk_size=16, l1_capacity_gb=0.01), model_id="m") as b:
        a.register_kv_caches(src, "vllm_cpu")
        b.register_kv_caches([torch.zeros(2, NB, BS, H, D) for _ in range(L)], "vllm_flash_attn")
        assert a.chunk_keys(toks) != b.chunk_keys(toks)


def test_describe_errors():
    with pytest.raises(InvalidArgumentError, match="block_size"):
        describe(torch.zeros(2, L, 64, H, D), "sglang_layer_first")
    with pytest.raises(InvalidArgumentError, match="whole number of pages"):
        describe(torch.zeros(2, L, 60, H, D), "sglang_layer_first", block_size=16)
    with pytest.raises(InvalidArgumentError, match="a list"):
        describe(torch.zeros(2, NB, BS, H, D), "vllm_flash_attn")
    with pytest.raises(InvalidArgumentError, match="one tensor holding every layer"):
        describe([torch.zeros(2, L, 64, H, D)] * 2, "sglang_layer_first", block_size=8)
    with pytest.raises(InvalidArgumentError, match="stride 1"):
        describe([torch.zeros(2, NB, BS, H, 2 * D)[..., ::2]], "vllm_flash_attn")
    with pytest.raises(InvalidArgumentError, match="torch tensors"):
        describe([np.zeros((2, NB, BS, H, D))], "vllm_flash_attn")
    with pytest.raises(InvalidArgumentError, match="must be even"):
        describe([torch.zeros(NB, H, BS, 2 * D + 1)], "vllm_cpu")
