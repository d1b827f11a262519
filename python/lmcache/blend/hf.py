"""KV blending prefill for Hugging Face transformers models (Llama, Qwen2, Qwen3).

blend_prefill() fills a DynamicCache for a prompt in which some segments
(passages, tool outputs...) already have cached KV, computed with each segment
standing alone at position 0. Those segments are not prefilled again:

1. Their cached keys are turned to the segment's real positions (RoPE).
2. Layers before the check layer run over every position (they are needed to
   see how far the cached KV is from what this prompt would produce).
3. At the check layer, the cached positions whose fresh K/V deviate most from
   the cached K/V are selected (the top `recompute_share` of them); positions
   outside cached segments and the last position are always selected.
4. From the check layer on only selected positions are computed; their K/V
   replace the cached ones, and they attend over the whole mixed KV with a
   causal mask by position.

The unselected positions keep their cached KV: they missed what came before
their segment, and the few tokens that missed it most are the ones fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache

from lmcache.blend.core import SegmentKV, blend_layers, place_cached
from lmcache.blend.layers import check_model, mlp_block, qkv
from lmcache.blend.rope import rerotate_keys
from lmcache.blend.spans import check_spans

@dataclass
class BlendOutput:
    """What blend_prefill() produced for one prompt."""

    cache: DynamicCache
    """KV of every prompt token but the last: pass it with the whole prompt to
    model.generate(input_ids=prompt, past_key_values=cache), which then runs
    the last token (the usual transformers convention for a prefilled cache)."""
    logits: torch.Tensor
    """Next-token logits after the whole prompt, [vocab]."""
    recomputed: torch.Tensor
    """Bool [prompt_len]: positions computed through every layer for this prompt."""


@torch.no_grad()
def segment_kv(model: nn.Module, token_ids: Sequence[int] | torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A segment's KV computed with the segment alone at position 0: what gets cached.

    Returns per layer (keys, values), each [kv_heads, seg_len, head_dim].
    """
    check_model(model)
    ids = _as_ids(token_ids, model)
    cache = model(input_ids=ids[None], use_cache=True).past_key_values
    return [(layer.keys[0], layer.values[0]) for layer in cache.layers]


@torch.no_grad()
def blend_prefill(
    model: nn.Module,
    input_ids: Sequence[int] | torch.Tensor,
    spans: Sequence[tuple[int, int]],
    cached_kv: Callable[[torch.Tensor], SegmentKV],
    recompute_share: float = 0.15,
    check_layer: int = 1,
) -> BlendOutput:
    """Prefill input_ids reusing cached segment KV, recomputing only what deviates most.

    model: a LlamaForCausalLM, Qwen2ForCausalLM or Qwen3ForCausalLM.
    input_ids: the whole prompt, 1-D (or [1, n]).
    spans: [start, end) of each segment that has cached KV; any order, no overlap.
    cached_kv: given a segment's token ids, returns its cached KV (see
        segment_kv(), which computes it).
    recompute_share: share of cached positions recomputed from the check layer
        on; 1 recomputes everything (a full prefill). 0 keeps the cached KV
        from the check layer on; layers before it are always computed, to
        measure the deviation, but with check_layer 1 that changes nothing:
        layer 0's KV depends on token and position only, so 0 is plain reuse.
    check_layer: the layer whose K/V deviation selects the positions; the
        layers before it run over every position (with 1, the usual choice,
        only layer 0 does).
    """
    check_model(model)
    ids = _as_ids(input_ids, model)
    n = ids.numel()
    if n == 0:
        raise ValueError("the prompt is empty")
    spans = check_spans(spans, n)
    if not 0.0 <= recompute_share <= 1.0:
        raise ValueError(f"recompute_share must be in [0, 1]; got {recompute_share}")
    n_layers = len(model.model.layers)
    if not 0 <= check_layer < n_layers:
        raise ValueError(f"check_layer must be in [0, {n_layers}); got {check_layer}")
    if not spans:
        return _plain_prefill(model, ids)

    ops = HfLayerOps(model)
    cached_k, cached_v, is_cached = place_cached(ops, ids, spans, cached_kv)
    out = blend_layers(ops, ids, cached_k, cached_v, is_cached, recompute_share, check_layer)
    # The last position is always active, so the last hidden row is the prompt's last token.
    logits = model.lm_head(model.model.norm(out.hidden[-1:]))[0]
    cache = DynamicCache(config=model.config)
    for i in range(n_layers):
        cache.update(out.keys[i][None, :, : n - 1].contiguous(), out.values[i][None, :, : n - 1].contiguous(), i)
    recomputed = torch.zeros(n, dtype=torch.bool, device=ids.device)
    recomputed[out.active] = True
    return BlendOutput(cache=cache, logits=logits, recomputed=recomputed)


class HfLayerOps:
    """blend.core.LayerOps over a transformers Llama/Qwen2/Qwen3 model."""

    def __init__(self, model: nn.Module) -> None:
        self._inner = model.model
        self._layers = list(self._inner.layers)
        self.num_layers = len(self._layers)
        self.num_kv_heads = model.config.num_key_value_heads
        self.head_dim = self._layers[0].self_attn.head_dim
        self.dtype = self._inner.embed_tokens.weight.dtype

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self._inner.embed_tokens(ids)

    def qkv(self, layer: int, h: torch.Tensor, positions: torch.Tensor):
        cos, sin = (t[0] for t in self._inner.rotary_emb(h[None], positions[None]))
        block = self._layers[layer]
        return qkv(block, block.input_layernorm(h), cos, sin)

    def scaling(self, layer: int) -> float:
        return self._layers[layer].self_attn.scaling

    def attn_out(self, layer: int, o: torch.Tensor) -> torch.Tensor:
        return self._layers[layer].self_attn.o_proj(o)

    def mlp_block(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        return mlp_block(self._layers[layer], h)

    def rerotate(self, keys: torch.Tensor, delta: int) -> torch.Tensor:
        return rerotate_keys(keys, delta, self._inner.rotary_emb.inv_freq)


def _as_ids(token_ids: Sequence[int] | torch.Tensor, model: nn.Module) -> torch.Tensor:
    ids = torch.as_tensor(token_ids, dtype=torch.long, device=model.device)
    if ids.dim() == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.dim() != 1:
        raise ValueError(f"expected one prompt of token ids (1-D or [1, n]); got shape {tuple(ids.shape)}")
    return ids


def _plain_prefill(model: nn.Module, ids: torch.Tensor) -> BlendOutput:
    """No cached segment: nothing to blend, so the model's own forward is the prefill."""
    out = model(input_ids=ids[None], use_cache=True)
    cache = out.past_key_values
    cache.crop(-1)  # keep all but the last token, as blend_prefill does
    return BlendOutput(cache=cache, logits=out.logits[0, -1],
                       recomputed=torch.ones(ids.numel(), dtype=torch.bool, device=ids.device))
