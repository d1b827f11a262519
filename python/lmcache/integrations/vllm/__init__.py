"""lmcache for vLLM (v1 KV-connector API).

Enable with::

    --kv-transfer-config '{"kv_connector": "LMCacheConnector",
                           "kv_connector_module_path": "lmcache.integrations.vllm",
                           "kv_role": "kv_both",
                           "kv_connector_extra_config": {"l1_capacity_gb": 8}}'

Keys of ``kv_connector_extra_config`` are ``lmcache.Config`` keys.
"""

from lmcache.integrations.vllm.connector import LMCacheConnector
from lmcache.integrations.vllm.lookup_rpc import clear_worker_cache, query_worker_stats

__all__ = ["LMCacheConnector", "clear_worker_cache", "query_worker_stats"]
