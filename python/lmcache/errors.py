"""lmcache exceptions.

Every error lmcache raises derives from :class:`LMCacheError`. The classes are
defined by the native module (so a status from C++ arrives as the right class)
and re-exported here:

- ``InvalidArgumentError`` (also a ``ValueError``): wrong shape, dtype, length or value.
- ``ConfigError`` (an ``InvalidArgumentError``): a bad config key or value.
- ``InvalidStateError``: a call made in the wrong order.
- ``OutOfMemoryError`` (also a ``MemoryError``).
- ``ClosedError``: the engine was closed.
- ``StorageError`` and its ``CorruptDataError``: a storage tier failed.
"""

from lmcache._core import (  # noqa: F401  (re-exported)
    ClosedError,
    CorruptDataError,
    InvalidArgumentError,
    InvalidStateError,
    LMCacheError,
    OutOfMemoryError,
    StorageError,
)


class ConfigError(InvalidArgumentError):
    """A configuration key is unknown or its value is not allowed."""


__all__ = [
    "LMCacheError",
    "InvalidArgumentError",
    "ConfigError",
    "InvalidStateError",
    "OutOfMemoryError",
    "ClosedError",
    "StorageError",
    "CorruptDataError",
]
