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
