"""The staging path GPU engines use until the CUDA kernels land, run here on
CPU tensors (the torch code is device-agnostic): it must move exactly the
bytes the direct native path moves."""

import numpy as np
import pytest
import torch

pytest.importorskip("vllm")

import lmcache  # noqa: E402
from lmcache.integrations.vllm.device_staging import DeviceStaging  # noqa: E402

BS, NB, H, D, L = 16, 12, 2, 32, 3


def engine():
    return lmcache.CacheEngine(lmcache.Config(chunk_size=32, l1_capacity_gb=0.01), model_id="m")


@pytest.mark.parametrize("layout", ["vllm_flash_attn", "vllm_flashinfer", "vllm_cpu"])
def test_staged_round_trip(layout):
    shape = {"vllm_flash_attn": (2, NB, BS, H, D), "vllm_flashinfer": (NB, 2, BS, H, D),
             "vllm_cpu": (NB, H, BS, 2 * D)}[layout]
    bdim = 1 if layout == "vllm_flash_attn" else 0
    src = [torch.randn(shape) for _ in range(L)]
    dst = [torch.zeros(shape) for _ in range(L)]
    toks = list(range(100, 196))  # 96 tokens = 3 chunks = 6 blocks
    with engine() as e:
        s = DeviceStaging(e, src, layout, BS)
        assert s.store(toks, [5, 1, 9, 0, 3, 11], 96) == 96
        d = DeviceStaging(e, dst, layout, BS)
        # vLLM already holds the first block; load the rest but the last token.
        assert d.load(toks, [2, 4, 6, 7, 8, 10], 16, 95) == 95
    pick = lambda t, ids: t.index_select(bdim, torch.tensor(ids))
    for a, b in zip(src, dst):
        assert torch.equal(pick(b, [4, 6, 7, 8]), pick(a, [1, 9, 0, 3]))
        last_b, last_a = pick(b, [10]), pick(a, [11])
        if layout != "vllm_cpu":  # token-major: the last token was not asked for (vLLM computes it)
            last_b, last_a = last_b[:, :, : BS - 1], last_a[:, :, : BS - 1]
        assert torch.equal(last_b, last_a)
        assert not pick(b, [2]).any()  # held by vLLM: not written


def test_staged_and_direct_paths_share_keys_and_bytes():
    src = [torch.randn(2, NB, BS, H, D) for _ in range(L)]
    toks = list(range(64))
    with engine() as e:
        DeviceStaging(e, src, "vllm_flash_attn", BS).store(toks, [3, 4, 7, 8], 64)
        out = [torch.zeros_like(t) for t in src]
        slots = np.concatenate([np.arange(b * BS, (b + 1) * BS) for b in (0, 1, 2, 5)])
        assert e.load(toks, out, slot_mapping=slots) == 64  # the direct path finds the staged chunks
    for a, b in zip(src, out):
        assert torch.equal(b[:, [0, 1, 2, 5]], a[:, [3, 4, 7, 8]])
