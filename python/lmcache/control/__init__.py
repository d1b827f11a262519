"""The HTTP control API and Prometheus metrics of the caches a process owns.

One server per process (lmcache.control.server), started by the first cache
made with control_port set; every cache of the process registers with it
(lmcache.control.registry) under a name of its own ("main", "segments").
"""

from lmcache.control.registry import CacheRegistry, registry

__all__ = ["CacheRegistry", "registry"]
