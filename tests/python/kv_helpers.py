"""Helpers shared by the Python tests."""

import torch


def flash_attn_cache(layers=2, blocks=32, block_size=8, heads=2, head_dim=32, dtype=torch.float32, fill=True):
    make = torch.randn if fill else torch.zeros
    return [make(2, blocks, block_size, heads, head_dim).to(dtype) for _ in range(layers)]
