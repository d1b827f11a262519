import pytest
import torch

import lmcache


@pytest.fixture
def make_engine():
    """CacheEngine factory; every engine is closed at the end of the test."""
    engines = []

    def make(**config):
        config.setdefault("chunk_size", 16)
        config.setdefault("l1_capacity_gb", 0.05)
        engine = lmcache.CacheEngine(lmcache.Config(**config), model_id="test-model")
        engines.append(engine)
        return engine

    yield make
    for e in engines:
        e.close()


def flash_attn_cache(layers=2, blocks=32, block_size=8, heads=2, head_dim=32, dtype=torch.float32, fill=True):
    make = torch.randn if fill else torch.zeros
    return [make(2, blocks, block_size, heads, head_dim).to(dtype) for _ in range(layers)]
