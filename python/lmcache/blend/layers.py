"""The pieces of a Llama/Qwen2/Qwen3 decoder layer that the blend prefill runs.

Only the projections, norms and MLP come from the model's own modules; the
attention itself is blend.core.attend, because the blend prefill needs
queries for a subset of positions attending over keys for every position,
which the model's attention forward does not offer.
"""

from __future__ import annotations

import torch
from torch import nn

from lmcache.blend.rope import apply_rope

# model_type -> whether its attention normalises q and k per head before RoPE.
SUPPORTED = {"llama": False, "qwen2": False, "qwen3": True}


def check_model(model: nn.Module) -> None:
    """Raise ValueError unless model is a causal LM this package can blend for."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED:
        raise ValueError(
            f"KV blending supports model types {sorted(SUPPORTED)}; got {model_type!r}"
        )
    layer_types = getattr(config, "layer_types", None) or []
    if getattr(config, "use_sliding_window", False) or "sliding_attention" in layer_types:
        raise ValueError("KV blending does not support sliding-window attention layers")
    for name in ("model", "lm_head"):
        if not hasattr(model, name):
            raise ValueError(f"expected a *ForCausalLM model with .{name}; got {type(model).__name__}")


def qkv(layer: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys and values of layer for normed hidden states x [seq, hidden].

    Returns q [heads, seq, head_dim] and k, v [kv_heads, seq, head_dim], with
    RoPE applied to q and k at the positions cos/sin [seq, head_dim] were made for.
    """
    attn = layer.self_attn
    shape = (x.shape[0], -1, attn.head_dim)
    q = attn.q_proj(x).view(shape)
    k = attn.k_proj(x).view(shape)
    v = attn.v_proj(x).view(shape)
    if hasattr(attn, "q_norm"):  # Qwen3: RMSNorm over each head, before RoPE
        q = attn.q_norm(q)
        k = attn.k_norm(k)
    q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def mlp_block(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The second half of a decoder layer: h + mlp(post_attention_layernorm(h))."""
    return h + layer.mlp(layer.post_attention_layernorm(h))
