"""Rotary position embedding (RoPE) helpers for moving cached keys.

A segment's keys are cached as computed with the segment standing alone at
position 0. RoPE turns a key at position p by the angle p * inv_freq, so the
same key at position p + delta is the cached key turned once more by
delta * inv_freq. Rotations compose exactly, which is why cached keys can be
reused at any offset without recomputing them.
"""

from __future__ import annotations

import torch


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Pair dimension i with i + d/2 as (-x2, x1): RoPE's layout in Llama and Qwen."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [..., seq, head_dim] by the model's cos/sin [seq, head_dim]."""
    return x * cos + rotate_half(x) * sin


def rerotate_keys(keys: torch.Tensor, delta: int | torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Move keys that RoPE placed at some positions to positions + delta.

    keys: [..., seq, head_dim], already rotated (as found in a KV cache).
    delta: one shift for all positions, or a tensor [seq] of per-position shifts.
    inv_freq: the model's rotary frequencies [head_dim / 2] (rotary_emb.inv_freq;
        it already holds any frequency scaling such as Llama-3's).

    The rotation carries no extra magnitude: a model's attention scaling
    (rotary_emb.attention_scaling, e.g. YaRN's) was applied once when the key
    was first rotated and must not be applied again.
    """
    head_dim = keys.shape[-1]
    if inv_freq.numel() * 2 != head_dim:
        raise ValueError(f"inv_freq has {inv_freq.numel()} frequencies; keys need head_dim/2 = {head_dim // 2}")
    delta = torch.as_tensor(delta, device=keys.device).reshape(-1)
    # Angles in float64: a shift of thousands of positions times a frequency
    # near 1 loses digits in float32, and the error grows with the offset.
    angles = delta.to(torch.float64)[:, None] * inv_freq.to(device=keys.device, dtype=torch.float64)[None, :]
    angles = torch.cat((angles, angles), dim=-1)  # [seq or 1, head_dim]
    cos = angles.cos().to(keys.dtype)
    sin = angles.sin().to(keys.dtype)
    return apply_rope(keys, cos, sin)
