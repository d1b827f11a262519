"""The model a vLLM worker runs, as the blend prefill needs it (LayerOps).

vLLM hands a KV connector its caches, not its model. The model is found
once, without editing or patching vLLM: the worker's model runner is the one
live object of vLLM's GPUModelRunner class (the CPU runner derives from it),
and the model it returns must own the attention layers whose caches the
connector was given. Its own modules (embedding, norms, fused QKV
projection, rotary embedding, output projection, MLP) then run outside its
forward; the attention itself is lmcache's (blend.core.attend), since the
blend needs queries for some positions over keys for all of them.

Covered: Llama, Qwen2 and Qwen3 architectures (LlamaForCausalLM,
Qwen2ForCausalLM, Qwen3ForCausalLM), tensor parallel size 1, vLLM's CPU
backend (K/V written through the attention backend's
``impl.do_kv_cache_update``). Anything else is refused with the reason, and
the worker serves prefixes only.
"""

from __future__ import annotations

import gc
import warnings

import torch

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")


class BlendUnsupported(Exception):
    """Why this engine cannot blend (said once; prefixes still work)."""


def find_model(layer_names: list[str]) -> torch.nn.Module:
    """The worker's model: the one that owns the attention layers named."""
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    with warnings.catch_warnings():  # isinstance() on some live objects (deprecated aliases) warns
        warnings.simplefilter("ignore")
        runners = [o for o in gc.get_objects() if isinstance(o, GPUModelRunner)]
    for runner in runners:
        try:
            model = runner.get_model()
        except Exception:  # noqa: BLE001 - a runner without a loaded model is simply not ours
            continue
        if all(_has_submodule(model, name) for name in layer_names):
            return model
    raise BlendUnsupported(f"no model runner in this process owns the attention layers {layer_names[:2]}...")


def _has_submodule(model: torch.nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


class VllmLayerOps:
    """blend.core.LayerOps over a vLLM Llama/Qwen2/Qwen3 model."""

    def __init__(self, model: torch.nn.Module, tp_size: int) -> None:
        arch = type(model).__name__
        if arch not in SUPPORTED_ARCHITECTURES:
            raise BlendUnsupported(f"blending covers {', '.join(SUPPORTED_ARCHITECTURES)}; this model is {arch}")
        if tp_size != 1:
            raise BlendUnsupported(f"blending in vLLM covers tensor parallel size 1; this engine runs {tp_size}")
        device = next(model.parameters()).device
        if device.type != "cpu":
            raise BlendUnsupported(f"blending in vLLM covers the CPU backend so far; this model runs on {device}")
        self.model = model
        self.inner = model.model
        self.layers = list(self.inner.layers)
        first = self.layers[0].self_attn
        if getattr(model.config, "sliding_window", None) and getattr(model.config, "use_sliding_window", False):
            raise BlendUnsupported("blending does not cover sliding-window attention")
        self.num_layers = len(self.layers)
        self.head_dim = first.head_dim
        self.num_kv_heads = first.kv_size // first.head_dim
        self.dtype = next(model.parameters()).dtype

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.inner.embed_tokens(ids)

    def qkv(self, layer: int, h: torch.Tensor, positions: torch.Tensor):
        block = self.layers[layer]
        a = block.self_attn
        qkv, _ = a.qkv_proj(block.input_layernorm(h))
        q, k, v = qkv.split([a.q_size, a.kv_size, a.kv_size], dim=-1)
        n, d = h.shape[0], self.head_dim
        if hasattr(a, "q_norm"):  # Qwen3: RMSNorm over each head, before RoPE
            q = a.q_norm(q.reshape(n, -1, d)).reshape(n, -1)
            k = a.k_norm(k.reshape(n, -1, d)).reshape(n, -1)
        q, k = a.rotary_emb(positions, q.contiguous(), k.contiguous())
        return (q.reshape(n, -1, d).transpose(0, 1), k.reshape(n, -1, d).transpose(0, 1),
                v.reshape(n, -1, d).transpose(0, 1))

    def scaling(self, layer: int) -> float:
        return self.layers[layer].self_attn.scaling

    def attn_out(self, layer: int, o: torch.Tensor) -> torch.Tensor:
        out, _ = self.layers[layer].self_attn.o_proj(o)
        return out

    def mlp_block(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        block = self.layers[layer]
        return h + block.mlp(block.post_attention_layernorm(h))

    def rerotate(self, keys: torch.Tensor, delta: int) -> torch.Tensor:
        # The model's own rotary embedding at position `delta` turns a key by
        # delta * inv_freq, its scaling included; rotations compose.
        rope = self.layers[0].self_attn.rotary_emb
        kvh, n, d = keys.shape
        flat = keys.transpose(0, 1).reshape(n, kvh * d).contiguous()
        dummy_q = torch.zeros(n, d, dtype=keys.dtype, device=keys.device)
        positions = torch.full((n,), int(delta), dtype=torch.long, device=keys.device)
        _, turned = rope(positions, dummy_q, flat)
        return turned.reshape(n, kvh, d).transpose(0, 1)


class PagedKVWriter:
    """Writes K/V of given slots into vLLM's paged caches with the attention
    backend's own update (its layout, its ISA, its scales)."""

    def __init__(self, model: torch.nn.Module, kv_caches: dict[str, torch.Tensor]) -> None:
        self._layers = []
        for name, cache in kv_caches.items():
            attn = model.get_submodule(name)
            update = getattr(getattr(attn, "impl", None), "do_kv_cache_update", None)
            if update is None:
                raise BlendUnsupported(f"the attention backend of {name} ({type(getattr(attn, 'impl', None)).__name__})"
                                       " has no do_kv_cache_update: blending covers vLLM's CPU backend")
            self._layers.append((attn, update, cache))

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor, slots: torch.Tensor) -> None:
        """keys, values: [kv_heads, n, d]; slots: [n] int64."""
        attn, update, cache = self._layers[layer]
        update(attn, keys.transpose(0, 1).contiguous(), values.transpose(0, 1).contiguous(), cache, slots)
