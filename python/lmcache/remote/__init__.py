"""Remote tiers (L3): a store shared by many engine instances and machines.

Backends are chosen by the URL scheme through a small lazy registry, so an
unused backend costs nothing (its client library is imported only when
chosen).
"""

from __future__ import annotations

import importlib

from lmcache.errors import ConfigError
from lmcache.remote.base import RemoteTier, RemoteTls, RemoteUnavailable

# scheme -> (module, class)
_BACKENDS = {
    "redis": ("lmcache.remote.redis_tier", "RedisTier"),
    "rediss": ("lmcache.remote.redis_tier", "RedisTier"),
    "redis+cluster": ("lmcache.remote.redis_tier", "RedisTier"),
    "rediss+cluster": ("lmcache.remote.redis_tier", "RedisTier"),
    "valkey": ("lmcache.remote.redis_tier", "RedisTier"),
}


def make_remote_tier(url: str, *, timeout_s: float, tls: RemoteTls | None = None) -> RemoteTier:
    """The tier for `url`; `tls` names the CA bundle / client certificate files of a TLS URL."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in _BACKENDS:
        shown = repr(scheme) if scheme.replace("+", "").isalnum() else "(not a scheme)"  # never echo a password
        raise ConfigError(f"config key 'remote_url': unknown scheme {shown}; allowed: {', '.join(_BACKENDS)}")
    if scheme == "valkey":
        url = "redis" + url[len("valkey"):]
    module, cls = _BACKENDS[scheme]
    return getattr(importlib.import_module(module), cls)(url, timeout_s=timeout_s, tls=tls or RemoteTls())


__all__ = ["RemoteTier", "RemoteTls", "RemoteUnavailable", "make_remote_tier"]
