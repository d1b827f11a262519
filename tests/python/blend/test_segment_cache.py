"""Segments found in prompts, their KV kept in lmcache's tiers, and a blended
prefill that reuses them in any order and at any offset (tiny float32 Llama)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from lmcache.blend.segment_cache import SegmentCache, blend_prefill_cached  # noqa: E402
from lmcache.blend.segments import spans_from_offsets, split_at_separator  # noqa: E402

CHUNK = 16
SEP = [3, 4]  # a two-token separator; content tokens below avoid 3 and 4


def test_split_at_separator():
    assert split_at_separator([9, 3, 4, 7, 7, 3, 4, 8], SEP) == [(0, 1), (3, 5), (7, 8)]
    assert split_at_separator([3, 4, 7, 3, 4], SEP) == [(2, 3)]  # empty pieces are no segments
    assert split_at_separator([3, 3, 4, 4], [3, 4]) == [(0, 1), (3, 4)]
    assert split_at_separator([5, 6, 7], SEP) == [(0, 3)]  # never occurs: one segment
    assert split_at_separator([4, 4, 4, 4, 4], [4, 4]) == [(4, 5)]  # occurrences never overlap: 0-1, 2-3; 4 is left
    with pytest.raises(ValueError, match="empty"):
        split_at_separator([1, 2], [])


def test_split_at_separator_is_vectorised_on_long_prompts():
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 1000, size=200_000)
    tokens[50_000:50_002] = SEP
    assert split_at_separator(tokens, SEP) == [(0, 50_000), (50_002, 200_000)]


def test_spans_from_offsets():
    assert spans_from_offsets([2, 10, 30], 40) == [(2, 10), (10, 30), (30, 40)]
    for bad in ([10, 2], [2, 2], [-1], [40]):
        with pytest.raises(ValueError, match="increasing positions"):
            spans_from_offsets(bad, 40)


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    m = transformers.LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():  # larger weights: attention that depends on what came before
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return m


def _text(seed: int, n: int) -> list[int]:
    return np.random.default_rng(seed).integers(5, 128, size=n).tolist()


def _full_logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1]


A, B, C = _text(1, 2 * CHUNK), _text(2, 3 * CHUNK + 5), _text(3, 2 * CHUNK)


def _prompt(system: list[int], passages: list[list[int]], question: list[int]) -> list[int]:
    out = list(system)
    for p in passages:
        out += SEP + p
    return out + SEP + question


def test_segments_are_cached_once_and_reused_in_any_order_and_offset(model, make_engine):
    cache = SegmentCache(make_engine(), model)
    first = _prompt(_text(4, 7), [A, B, C], _text(5, 6))
    out = blend_prefill_cached(model, cache, first, separator=SEP)
    # Nothing was cached: an ordinary prefill, exactly.
    assert torch.equal(out.logits.argmax(), _full_logits(model, first).argmax())
    assert torch.allclose(out.logits, _full_logits(model, first), atol=1e-5)
    stats = cache.engine.stats()
    assert stats["stored_chunks"] == 2 + 3 + 2 and stats["loaded_chunks"] == 0  # B's 5-token tail is not cached

    # Another system prompt, another order, another question: every passage is found.
    second = _prompt(_text(6, 11), [C, A, B], _text(7, 9))
    exact = blend_prefill_cached(model, cache, second, separator=SEP, recompute_share=1.0)
    assert torch.allclose(exact.logits, _full_logits(model, second), atol=1e-4)
    assert cache.engine.stats()["loaded_chunks"] == 7 and cache.engine.stats()["stored_chunks"] == 7
    # The error against full prefill falls as more is recomputed.
    errors = [(blend_prefill_cached(model, cache, second, separator=SEP, recompute_share=s).logits
               - _full_logits(model, second)).abs().max().item() for s in (0.0, 0.5, 1.0)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-4


def test_offsets_mark_segments_too(model, make_engine):
    cache = SegmentCache(make_engine(), model)
    glue = _text(8, 5)
    prompt = glue + A + B
    blend_prefill_cached(model, cache, prompt, offsets=[len(glue), len(glue) + len(A)])
    again = _text(9, 3) + B + A
    out = blend_prefill_cached(model, cache, again, offsets=[3, 3 + len(B)], recompute_share=1.0)
    assert cache.engine.stats()["loaded_chunks"] == 5
    assert torch.allclose(out.logits, _full_logits(model, again), atol=1e-4)


def test_segments_come_back_from_disk_in_a_new_engine(model, make_engine, tmp_path):
    disk = {"local_disk_path": str(tmp_path / "disk"), "disk_capacity_gb": 0.01}
    writer = SegmentCache(make_engine(**disk), model)
    blend_prefill_cached(model, writer, _prompt([], [A, C], _text(10, 4)), separator=SEP)
    writer.engine.flush_writes()
    writer.engine.close()
    reader = SegmentCache(make_engine(**disk), model)
    prompt = _prompt(_text(11, 4), [C, A], _text(12, 4))
    out = blend_prefill_cached(model, reader, prompt, separator=SEP, recompute_share=1.0, store_missing=False)
    s = reader.engine.stats()
    assert s["lookup_disk_hit_tokens"] == 4 * CHUNK and s["loaded_chunks"] == 4
    assert torch.allclose(out.logits, _full_logits(model, prompt), atol=1e-4)


def test_a_segment_gone_since_lookup_is_computed(model, make_engine):
    cache = SegmentCache(make_engine(), model)
    cache.store(A, [(k, v) for k, v in _segment_kv(model, A)])
    assert cache.cached_tokens(A) == 2 * CHUNK
    cache.engine.clear()
    assert cache.load(A, 2 * CHUNK) is None
    with pytest.raises(ValueError, match="whole chunks"):
        cache.load(A, CHUNK + 1)


def test_bad_input_gets_a_message_then_ordinary_behaviour(model, make_engine, caplog):
    cache = SegmentCache(make_engine(), model)
    prompt = _text(13, 40)  # no separator in it
    with caplog.at_level(logging.WARNING, logger="lmcache.blend.segment_cache"):
        out = blend_prefill_cached(model, cache, prompt, separator=[1, 2, 1, 2])
    assert "does not occur" in caplog.text
    assert torch.allclose(out.logits, _full_logits(model, prompt), atol=1e-5)
    # Segments shorter than a chunk are computed with the prompt, never cached.
    short = _prompt([], [_text(14, 5), _text(15, 7)], _text(16, 3))
    out = blend_prefill_cached(model, cache, short, separator=SEP)
    assert cache.engine.stats()["stored_chunks"] == 2  # only the 40-token prompt's two whole chunks
    assert torch.allclose(out.logits, _full_logits(model, short), atol=1e-5)
    with pytest.raises(ValueError, match="exactly one of separator= and offsets="):
        blend_prefill_cached(model, cache, prompt)


def _segment_kv(model, ids):
    from lmcache.blend import segment_kv

    return segment_kv(model, torch.tensor(ids))
