"""lmcache for SGLang: a HiCache storage backend.

    --enable-hierarchical-cache --hicache-storage-backend dynamic
    --hicache-storage-backend-extra-config '{"backend_name": "lmcache",
        "module_path": "lmcache.integrations.sglang", "class_name": "LMCacheHiCacheStorage",
        "interface_v1": 1, "l1_capacity_gb": 16, "local_disk_path": "/mnt/nvme/lmcache"}'

Other extra-config keys are lmcache.Config keys.
"""

from lmcache.integrations.sglang.storage import LMCacheHiCacheStorage

__all__ = ["LMCacheHiCacheStorage"]
