"""LMCacheHiCacheStorage against SGLang's real classes on the CPU: its host
pools (MHA and MLA, every supported layout), its HiCacheStorageConfig, its
dynamic-backend factory and its page hashes, driven the way SGLang's cache
controller drives a backend. Runs in SGLang's own virtual environment
(scripts/test.sh); skipped where SGLang is not installed."""

import os
import tempfile

import pytest

pytest.importorskip("sglang", reason="runs in the SGLang venv (scripts/test.sh)")
os.environ.setdefault("SGLANG_CACHE_DIR", tempfile.mkdtemp(prefix="sglang-cache-"))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", tempfile.mkdtemp(prefix="torch-ext-"))

import torch  # noqa: E402
from sglang.srt.mem_cache.hicache_storage import HiCacheStorageConfig  # noqa: E402
from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool, MLATokenToKVPool  # noqa: E402
from sglang.srt.mem_cache.pool_host.base import host_memory_budget_scope  # noqa: E402
from sglang.srt.mem_cache.pool_host.mha import MHATokenToKVPoolHost  # noqa: E402
from sglang.srt.mem_cache.pool_host.mla import MLATokenToKVPoolHost  # noqa: E402
from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory  # noqa: E402
from sglang.srt.mem_cache.utils import get_hash_str  # noqa: E402

import lmcache  # noqa: E402
from lmcache.integrations.sglang import LMCacheHiCacheStorage  # noqa: E402

P = 16  # page size
LAYOUTS = ["layer_first", "page_first", "page_first_direct"]


def host_pool(mla: bool, layout: str, dtype=torch.bfloat16):
    if mla:
        dev = MLATokenToKVPool(size=128, page_size=P, dtype=dtype, kv_lora_rank=64, qk_rope_head_dim=16,
                               layer_num=2, device="cpu", enable_memory_saver=False)
        with host_memory_budget_scope(1 << 30):
            return MLATokenToKVPoolHost(dev.get_device_pool_infos()[0].buffer_info, 2.0, 0, P, layout,
                                        pin_memory=False, device="cpu", override_kv_cache_dim=dev.kv_cache_dim,
                                        device_capacity_tokens=dev.size, start_layer=dev.start_layer,
                                        end_layer=dev.end_layer, target_layer_num=dev.layer_num)
    dev = MHATokenToKVPool(size=128, page_size=P, dtype=dtype, head_num=2, head_dim=64, layer_num=2, device="cpu",
                           enable_memory_saver=False)
    with host_memory_budget_scope(1 << 30):
        return MHATokenToKVPoolHost(dev.get_device_pool_infos()[0].buffer_info, 2.0, 0, P, layout,
                                    pin_memory=False, device="cpu", device_capacity_tokens=dev.size,
                                    start_layer=dev.start_layer, end_layer=dev.end_layer)


def backend(host, *, mla=False, tp_rank=0, tp_size=1, **lmcache_config):
    extra = {"backend_name": "lmcache", "module_path": "lmcache.integrations.sglang",
             "class_name": "LMCacheHiCacheStorage", "interface_v1": 1,
             "lmcache": {"l1_capacity_gb": 0.05, **lmcache_config}}
    cfg = HiCacheStorageConfig(tp_rank=tp_rank, tp_size=tp_size, pp_rank=0, pp_size=1, attn_cp_rank=0,
                               attn_cp_size=1, is_mla_model=mla, enable_storage_metrics=False,
                               is_page_first_layout=host.layout == "page_first", model_name="org/tiny-model",
                               extra_config=extra)
    b = StorageBackendFactory.create_backend("dynamic", cfg, host)  # SGLang's own factory
    assert isinstance(b, LMCacheHiCacheStorage)
    b.register_mem_pool_host(host)
    b.on_host_pools_registered()
    return b


def page_keys(tokens):
    """SGLang's page hashes, computed by SGLang."""
    keys, prior = [], None
    for i in range(0, len(tokens), P):
        prior = get_hash_str(tokens[i:i + P], prior_hash=prior)
        keys.append(prior)
    return keys


def pages(host, indices):
    return [host.get_data_page(int(i), flat=True).clone() for i in indices[::P]]


@pytest.mark.parametrize("mla", [False, True], ids=["mha", "mla"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_zero_copy_round_trip_exists_and_misses(mla, layout):
    host = host_pool(mla, layout)
    host.kv_buffer.copy_(torch.randn(host.kv_buffer.shape).to(host.kv_buffer.dtype))
    b = backend(host, mla=mla)
    tokens = list(range(100, 100 + 4 * P))
    keys = page_keys(tokens)
    src = host.alloc(4 * P)
    assert b.batch_set_v1(keys, src) == [True] * 4
    assert b.batch_exists(keys) == 4
    assert b.batch_exists(page_keys(list(range(7, 7 + 4 * P)))) == 0  # other tokens: a miss
    assert b.batch_exists(keys[:2] + ["0" * 64] + keys[3:]) == 2  # only the leading run counts
    want = pages(host, src)
    dst = host.alloc(4 * P)
    host.kv_buffer.view(-1)[:0]  # (no-op: dst pages hold whatever the pool had)
    for i in dst[::P]:
        host.set_from_flat_data_page(int(i), torch.zeros_like(want[0]))
    assert b.batch_get_v1(keys, dst) == [True] * 4
    for a, got in zip(want, pages(host, dst)):
        assert torch.equal(a, got)  # byte-exact
    assert b.batch_get_v1(page_keys(list(range(9, 9 + 2 * P))), dst[: 2 * P]) == [False, False]
    b.close()


def test_vanished_entry_ends_the_prefix():
    host = host_pool(False, "page_first")
    host.kv_buffer.copy_(torch.randn(host.kv_buffer.shape).to(host.kv_buffer.dtype))
    b = backend(host)
    keys = page_keys(list(range(4 * P)))
    src = host.alloc(4 * P)
    b.batch_set_v1(keys, src)
    victim = b.engine.keys_from_ids([keys[2]]).hex()[0]
    b.engine._runtime.drop_chunk_for_testing(victim)  # evicted between exists and get
    dst = host.alloc(4 * P)
    assert b.batch_get_v1(keys, dst) == [True, True, False, False]
    assert b.batch_exists(keys) == 2
    b.close()


def test_generic_flat_page_api():
    host = host_pool(False, "layer_first")
    host.kv_buffer.copy_(torch.randn(host.kv_buffer.shape).to(host.kv_buffer.dtype))
    b = backend(host)
    keys = page_keys(list(range(50, 50 + 2 * P)))
    src = host.alloc(2 * P)
    flat = [host.get_data_page(int(i), flat=True).clone() for i in src[::P]]
    assert b.batch_set(keys, flat)
    assert b.exists(keys[0]) and not b.exists("f" * 64)
    out = b.batch_get(keys, [host.get_dummy_flat_data_page() for _ in keys])
    assert all(torch.equal(a, o) for a, o in zip(flat, out))
    assert b.get("e" * 64, host.get_dummy_flat_data_page()) is None
    b.close()


@pytest.mark.parametrize("mla", [False, True], ids=["mha", "mla"])
def test_pages_cross_layouts_and_processes_through_disk(tmp_path, mla):
    """Stored from a page_first pool, read into a layer_first pool by a new backend on the same disk
    directory: payloads are token-major, so host layouts need not agree."""
    a_host = host_pool(mla, "page_first")
    a_host.kv_buffer.copy_(torch.randn(a_host.kv_buffer.shape).to(a_host.kv_buffer.dtype))
    keys = page_keys(list(range(300, 300 + 3 * P)))
    a = backend(a_host, mla=mla, local_disk_path=str(tmp_path))
    src = a_host.alloc(3 * P)
    a.batch_set_v1(keys, src)
    want = [a_host.get_data_page(int(i), flat=True).clone() for i in src[::P]]
    a.close()  # flushes the write-behind and releases the directory
    b_host = host_pool(mla, "layer_first")
    b = backend(b_host, mla=mla, local_disk_path=str(tmp_path))
    assert b.batch_exists(keys) == 3
    dst = b_host.alloc(3 * P)
    assert b.batch_get_v1(keys, dst) == [True] * 3
    got = [b_host.get_data_page(int(i), flat=True) for i in dst[::P]]
    # Flat pages of page_first are [.., P, L, ..] and of layer_first [.., L, P, ..]: compare per token.
    L = a_host.layer_num
    for w, g in zip(want, got):
        if mla:
            w, g = w.view(P, L, -1), g.view(L, P, -1).transpose(0, 1)
        else:
            w, g = w.view(2, P, L, -1), g.view(2, L, P, -1).transpose(1, 2)
        assert torch.equal(w, g)
    assert b.lmcache_stats()["disk_recovered_records"] == 3
    b.close()


def test_tp_rank_in_the_key_except_for_mla():
    host = host_pool(False, "page_first")
    r0, r1 = backend(host, tp_rank=0, tp_size=2), backend(host, tp_rank=1, tp_size=2)
    keys = page_keys(list(range(P)))
    assert r0.engine.keys_from_ids(keys) != r1.engine.keys_from_ids(keys)
    r0.close(), r1.close()
    mhost = host_pool(True, "page_first")
    m0, m1 = backend(mhost, mla=True, tp_rank=0, tp_size=2), backend(mhost, mla=True, tp_rank=1, tp_size=2)
    assert m0.engine.keys_from_ids(keys) == m1.engine.keys_from_ids(keys)
    assert not m1.is_writer and m1.batch_set_v1(keys, mhost.alloc(P)) == [True]  # rank 1 does not write
    assert m1.batch_exists(keys) == 0
    m0.close(), m1.close()


def test_bad_input_is_a_clear_error_or_a_miss():
    host = host_pool(False, "page_first")
    b = backend(host)
    keys = page_keys(list(range(2 * P)))
    # One page of slots for two keys: refused (logged), nothing stored, nothing raised into SGLang.
    assert b.batch_set_v1(keys, host.alloc(P)) == [False, False]
    assert b.batch_exists(keys) == 0
    assert b.batch_get_v1(keys, host.alloc(P)) == [False, False]
    with pytest.raises(lmcache.ConfigError, match="chunk_sise"):
        backend(host, chunk_sise=3)
    b.close()


def test_storage_metrics_for_sglang():
    host = host_pool(False, "page_first")
    b = backend(host)
    keys = page_keys(list(range(2 * P)))
    b.batch_set_v1(keys, host.alloc(2 * P))
    b.batch_get_v1(keys, host.alloc(2 * P))
    m = b.get_stats()
    assert m.backup_pgs == [2] and m.prefetch_pgs == [2]
    assert b.get_stats().backup_pgs == []  # reset on read
    b.close()


def test_lmcache_config_is_a_sub_dict_of_the_extra_config():
    from lmcache.errors import ConfigError
    from lmcache.integrations.sglang.storage import lmcache_config_of

    assert lmcache_config_of({"backend_name": "lmcache", "some_future_sglang_key": 1,
                              "lmcache": {"chunk_size": 64}}) == {"chunk_size": 64}
    assert lmcache_config_of(None) == {}
    with pytest.raises(ConfigError, match="belong under 'lmcache'"):
        lmcache_config_of({"backend_name": "lmcache", "l1_capacity_gb": 4})
    with pytest.raises(ConfigError, match="mapping"):
        lmcache_config_of({"lmcache": "chunk_size=64"})


def test_two_backends_share_one_node_server(tmp_path):
    """SGLang's backend on the node's cache by configuration only
    (server_socket): pages one backend stores, another (another layout,
    another engine) reads back byte for byte."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "server"))
    from node_server import NodeServerProcess

    node = NodeServerProcess(str(tmp_path / "run" / "node.sock"), chunk_size=P, l1_capacity_gb=0.05)
    try:
        a_host, b_host = host_pool(False, "page_first"), host_pool(False, "layer_first")
        a_host.kv_buffer.copy_(torch.randn(a_host.kv_buffer.shape).to(a_host.kv_buffer.dtype))
        a = backend(a_host, server_socket=node.socket_path)
        b = backend(b_host, server_socket=node.socket_path)
        keys = page_keys(list(range(700, 700 + 3 * P)))
        src = a_host.alloc(3 * P)
        assert a.batch_set_v1(keys, src) == [True] * 3
        assert b.batch_exists(keys) == 3
        dst = b_host.alloc(3 * P)
        assert b.batch_get_v1(keys, dst) == [True] * 3
        L = a_host.layer_num
        for want, got in zip(pages(a_host, src), pages(b_host, dst)):
            # page_first flat pages are [2, P, L, ..], layer_first ones [2, L, P, ..]: compare per token.
            assert torch.equal(want.view(2, P, L, -1), got.view(2, L, P, -1).transpose(1, 2))
        assert b.engine.stats()["server_connected"]
        a.close()
        b.close()
    finally:
        node.stop()
