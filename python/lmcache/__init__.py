"""lmcache: a KV-cache layer for LLM serving engines.

Keeps the attention KV an engine computed, in tiers (host memory now; disk
and a shared remote store behind the same interface), and hands it back when
the same tokens come again, so the engine skips that prefill.
"""

from lmcache.config import Config
from lmcache.engine import CacheEngine
from lmcache.errors import (
    ClosedError,
    ConfigError,
    CorruptDataError,
    InvalidArgumentError,
    InvalidStateError,
    LMCacheError,
    OutOfMemoryError,
    StorageError,
)

__version__ = "0.1.0"


def get_include() -> str:
    """Folder holding lmcache/lmcache.h, for engines using the C API."""
    import os

    return os.path.join(os.path.dirname(__file__), "include")


def get_library_dir() -> str:
    """Folder holding liblmcache.so."""
    import os

    return os.path.join(os.path.dirname(__file__), "lib")


__all__ = [
    "CacheEngine",
    "Config",
    "LMCacheError",
    "InvalidArgumentError",
    "ConfigError",
    "InvalidStateError",
    "OutOfMemoryError",
    "ClosedError",
    "StorageError",
    "CorruptDataError",
    "get_include",
    "get_library_dir",
]
