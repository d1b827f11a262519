"""Where vLLM's built-in LMCacheConnectorV1 looks for its implementation
(lmcache.integration.vllm.vllm_v1_adapter): with this package installed,
`{"kv_connector": "LMCacheConnectorV1"}` runs lmcache. lmcache's own adapters
live in lmcache.integrations."""
