"""How the connector moves data, decided the same way in the scheduler and
the worker processes (they must agree: a store the scheduler expects to be
asynchronous holds its request's blocks until the worker reports it done).
"""

from __future__ import annotations

from lmcache import _core
from lmcache.config import Config


def native_gpu(on_gpu: bool) -> bool:
    """GPU caches moved by lmcache's own CUDA path (not the torch fallback)."""
    return on_gpu and _core.device_backend() == "cuda"


def _enabled(mode: str, on_gpu: bool) -> bool:
    if on_gpu and not native_gpu(on_gpu):
        return False  # the torch fallback loads and stores whole, synchronously
    return mode == "on" or (mode == "auto" and on_gpu)


def layerwise_loads(config: Config, on_gpu: bool) -> bool:
    return _enabled(config.vllm.layerwise_load, on_gpu)


def async_stores(config: Config, on_gpu: bool) -> bool:
    return _enabled(config.vllm.async_store, on_gpu)
