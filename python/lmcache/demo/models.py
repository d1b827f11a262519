"""Random-weight Llama models made on the fly: this machine reaches no model
hub, and the demo, benchmarks and tests need real models of known shapes."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LlamaShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    max_positions: int
    dtype: str


# head_dim = hidden / heads must be one vLLM's CPU attention supports (32, 64, 80, ...).
TINY_F32 = LlamaShape(layers=2, hidden=128, heads=4, kv_heads=2, intermediate=256, vocab=512,
                      max_positions=8192, dtype="float32")
BENCH_BF16 = LlamaShape(layers=8, hidden=512, heads=8, kv_heads=2, intermediate=1536, vocab=2048,
                        max_positions=16384, dtype="bfloat16")


def make_llama(path: str, shape: LlamaShape = TINY_F32, seed: int = 0) -> str:
    """Saves a random Llama of `shape` to `path` (once; reused after) and returns the path."""
    marker = os.path.join(path, "lmcache-shape.txt")
    if os.path.exists(marker) and open(marker).read() == repr(asdict(shape)):
        return path
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                      num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                      num_key_value_heads=shape.kv_heads, vocab_size=shape.vocab,
                      max_position_embeddings=shape.max_positions, torch_dtype=shape.dtype)
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).to(getattr(torch, shape.dtype)).save_pretrained(path)
    with open(marker, "w") as f:
        f.write(repr(asdict(shape)))
    return path
