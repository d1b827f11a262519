"""KV blending prefill on tiny random-weight Llama, Qwen2 and Qwen3 models."""

from __future__ import annotations

import types

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lmcache.blend import blend_prefill, rerotate_keys, segment_kv  # noqa: E402
from lmcache.blend.rope import apply_rope  # noqa: E402

VOCAB = 128
TINY = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)


def _llama():
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY))


def _llama3():
    # Llama-3 frequency scaling: it changes rotary_emb.inv_freq, which the
    # re-rotation must use rather than the plain RoPE frequencies.
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY, rope_scaling=scaling, rope_theta=500000.0))


def _qwen2():
    return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**TINY))  # q/k/v projections have biases


def _qwen3():
    return transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**TINY, head_dim=16))  # q_norm/k_norm


MAKERS = {"llama": _llama, "llama3": _llama3, "qwen2": _qwen2, "qwen3": _qwen3}


@pytest.fixture(scope="module", params=sorted(MAKERS))
def model(request):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = MAKERS[request.param]().float().eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                # Random init gives near-uniform attention; larger weights make
                # positions matter, so that reuse without recompute is visibly wrong.
                p.mul_(4.0)
            else:
                # Norm weights start at 1 and biases at 0: make them count.
                p.uniform_(0.5, 1.5)
    return m


class SegmentStore:
    """Cached segment KV keyed by the segment's tokens, computed once each."""

    def __init__(self, model):
        self.model = model
        self.kv = {}
        self.computed = 0

    def __call__(self, token_ids: torch.Tensor):
        key = tuple(token_ids.tolist())
        if key not in self.kv:
            self.kv[key] = segment_kv(self.model, token_ids)
            self.computed += 1
        return self.kv[key]


def _prompt(seed: int, pieces: list[torch.Tensor | int]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Join pieces: a tensor is a cached segment, an int is that many uncached random tokens."""
    gen = torch.Generator().manual_seed(seed)
    parts, spans, pos = [], [], 0
    for piece in pieces:
        if isinstance(piece, int):
            piece_ids = torch.randint(0, VOCAB, (piece,), generator=gen)
        else:
            piece_ids = piece
            spans.append((pos, pos + len(piece)))
        parts.append(piece_ids)
        pos += len(piece_ids)
    return torch.cat(parts), spans


def _segments(seed: int, lengths: list[int]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=gen) for n in lengths]


@torch.no_grad()
def _full(model, ids: torch.Tensor):
    out = model(input_ids=ids[None], use_cache=True)
    return out.logits[0, -1], out.past_key_values


def _generate(model, ids: torch.Tensor, cache=None) -> list[int]:
    # An explicit mask: otherwise generate() masks every token equal to pad_token_id.
    out = model.generate(input_ids=ids[None], attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         past_key_values=cache, max_new_tokens=6, do_sample=False, pad_token_id=0)
    return out[0, len(ids):].tolist()


def _rope_at(rotary, raw: torch.Tensor, first: int) -> torch.Tensor:
    """raw [heads, seq, head_dim] rotated by the model's RoPE at positions first, first + 1, ..."""
    pos = torch.arange(first, first + raw.shape[1])[None]
    cos, sin = rotary(raw[None], pos)
    return apply_rope(raw, cos[0], sin[0])


def test_rerotate_keys_matches_rope_at_the_new_positions(model):
    rotary = model.model.rotary_emb
    raw = torch.randn(2, 10, rotary.inv_freq.numel() * 2, generator=torch.Generator().manual_seed(1))
    moved = rerotate_keys(_rope_at(rotary, raw, 0), 300, rotary.inv_freq)
    assert torch.allclose(moved, _rope_at(rotary, raw, 300), atol=1e-4)
    # Per-position shifts, and moving back, are rotations too.
    per_pos = rerotate_keys(_rope_at(rotary, raw, 0), torch.full((10,), 7), rotary.inv_freq)
    assert torch.allclose(per_pos, _rope_at(rotary, raw, 7), atol=1e-5)
    assert torch.allclose(rerotate_keys(moved, -300, rotary.inv_freq), _rope_at(rotary, raw, 0), atol=1e-4)


def test_rerotate_keys_does_not_rescale():
    # YaRN scales cos/sin by an attention factor != 1; a cached key already
    # carries it, so moving the key must only turn it.
    scaling = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}
    config = transformers.LlamaConfig(**TINY, rope_scaling=scaling)
    rotary = transformers.models.llama.modeling_llama.LlamaRotaryEmbedding(config)
    assert rotary.attention_scaling != 1.0
    raw = torch.randn(2, 10, rotary.inv_freq.numel() * 2, generator=torch.Generator().manual_seed(2))
    moved = rerotate_keys(_rope_at(rotary, raw, 0), 200, rotary.inv_freq)
    assert torch.allclose(moved, _rope_at(rotary, raw, 200), atol=1e-4)


def test_rerotate_keys_rejects_mismatched_frequencies():
    with pytest.raises(ValueError, match="head_dim"):
        rerotate_keys(torch.zeros(1, 4, 8), 3, torch.ones(3))


def test_full_share_equals_full_prefill(model):
    segs = _segments(10, [12, 20, 9])
    ids, spans = _prompt(11, [3, segs[0], 4, segs[1], segs[2], 5])
    out = blend_prefill(model, ids, spans, SegmentStore(model), recompute_share=1.0)
    logits, cache = _full(model, ids)
    assert out.recomputed.all()
    assert (out.logits - logits).abs().max() < 1e-5
    for layer_out, layer_full in zip(out.cache.layers, cache.layers):
        assert (layer_out.keys - layer_full.keys[:, :, :-1]).abs().max() < 1e-5
        assert (layer_out.values - layer_full.values[:, :, :-1]).abs().max() < 1e-5
    assert _generate(model, ids, out.cache) == _generate(model, ids)


def test_error_falls_as_share_rises(model):
    shares = [0.0, 0.15, 0.5, 1.0]
    errors = torch.zeros(len(shares))
    for seed in range(4):
        segs = _segments(100 + seed, [16, 24, 12, 20])
        ids, spans = _prompt(200 + seed, [4, *segs, 6])
        store = SegmentStore(model)
        logits, _ = _full(model, ids)
        for j, share in enumerate(shares):
            out = blend_prefill(model, ids, spans, store, recompute_share=share)
            errors[j] += (out.logits - logits).abs().max() / 4
    assert all(errors[j + 1] <= errors[j] * 1.05 for j in range(len(shares) - 1)), errors
    assert errors[0] > 100 * max(errors[-1].item(), 1e-6), errors  # reuse alone is visibly off


def test_selected_positions(model):
    segs = _segments(20, [20, 20])
    ids, spans = _prompt(21, [5, segs[0], segs[1], 3])
    out = blend_prefill(model, ids, spans, SegmentStore(model), recompute_share=0.15)
    cached = torch.zeros(len(ids), dtype=torch.bool)
    cached[5:45] = True
    assert out.recomputed[~cached].all()  # uncached tokens are always computed
    assert int(out.recomputed[cached].sum()) == 6  # ceil(0.15 * 40)
    reuse = blend_prefill(model, ids, spans, SegmentStore(model), recompute_share=0.0)
    assert not reuse.recomputed[cached].any()


def test_segments_reused_at_any_offset_and_order(model):
    a, b = _segments(30, [14, 18])
    store = SegmentStore(model)
    prompts = [_prompt(31, [2, a, 5, b, 4]), _prompt(32, [9, b, a, 3]), _prompt(33, [a, 1, b, 30, a, 2])]
    for ids, spans in prompts:
        out = blend_prefill(model, ids, spans, store, recompute_share=1.0)
        logits, _ = _full(model, ids)
        assert (out.logits - logits).abs().max() < 1e-5
        assert _generate(model, ids, out.cache) == _generate(model, ids)
        # Nothing recomputed from layer 1 on: layer 0 KV depends on token and
        # position only, so the re-rotated cache must match a full prefill.
        reuse = blend_prefill(model, ids, spans, store, recompute_share=0.0)
        _, cache = _full(model, ids)
        assert (reuse.cache.layers[0].keys - cache.layers[0].keys[:, :, :-1]).abs().max() < 1e-4
    assert store.computed == 2  # each segment was computed once, then reused


def test_no_cached_segment_is_plain_prefill(model):
    ids, _ = _prompt(40, [25])
    out = blend_prefill(model, ids, [], SegmentStore(model))
    logits, _ = _full(model, ids)
    assert torch.equal(out.logits, logits)
    assert _generate(model, ids, out.cache) == _generate(model, ids)


@pytest.mark.parametrize(
    "spans, message",
    [([(2, 8), (6, 10)], "overlap"), ([(5, 40)], "outside"), ([(-1, 3)], "outside"), ([(4, 4)], "empty")],
)
def test_bad_spans(model, spans, message):
    ids, _ = _prompt(50, [20])
    with pytest.raises(ValueError, match=message):
        blend_prefill(model, ids, spans, SegmentStore(model))


def test_bad_arguments(model):
    ids, _ = _prompt(51, [20])
    store = SegmentStore(model)
    with pytest.raises(ValueError, match="recompute_share"):
        blend_prefill(model, ids, [(2, 6)], store, recompute_share=1.5)
    with pytest.raises(ValueError, match="check_layer"):
        blend_prefill(model, ids, [(2, 6)], store, check_layer=3)
    with pytest.raises(ValueError, match="expected"):
        blend_prefill(model, ids, [(2, 6)], lambda seg: segment_kv(model, seg[:-1]))
    with pytest.raises(ValueError, match="layers"):
        blend_prefill(model, ids, [(2, 6)], lambda seg: segment_kv(model, seg)[:2])


def test_unsupported_models():
    gpt2 = types.SimpleNamespace(config=types.SimpleNamespace(model_type="gpt2"))
    with pytest.raises(ValueError, match="supports model types"):
        blend_prefill(gpt2, [1, 2, 3], [(0, 2)], lambda seg: [])
    config = transformers.Qwen2Config(**TINY, use_sliding_window=True, sliding_window=16, max_window_layers=0)
    with pytest.raises(ValueError, match="sliding"):
        blend_prefill(transformers.Qwen2ForCausalLM(config), [1, 2, 3], [(0, 2)], lambda seg: [])
