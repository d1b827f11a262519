"""Bad input from a careless caller: a clear error, never a crash or wrong bytes.

Block ids that would wrap around when multiplied, handles that outlive the
tensors they copy into, strided buffers, slot arrays changed by another
thread during a call, options that would be silently ignored, and an engine
used in a forked child.
"""

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch
from kv_helpers import flash_attn_cache

import lmcache
from lmcache import InvalidArgumentError, InvalidStateError, _core


def tokens_of(n, seed=0):
    return np.random.default_rng(seed).integers(0, 32000, size=n).tolist()


@pytest.mark.parametrize("bad_block", [2**62, 2**63 - 1, 32, 2**62 + 1])
def test_block_ids_outside_the_cache_are_refused(make_engine, bad_block):
    # 2**62 * 8 wraps to 0 in int64: before the fix it stored block 1's KV
    # under the prompt's key and loaded into block 0.
    engine = make_engine()
    src = flash_attn_cache()  # 32 blocks of 8 tokens
    engine.register_kv_caches(src)
    toks = tokens_of(16)
    with pytest.raises(InvalidArgumentError, match="not a block of this cache"):
        engine.store(toks, block_ids=[1, bad_block])
    assert engine.lookup(toks) == 0
    engine.store(toks, block_ids=[1, 2])
    before = [t.clone() for t in src]
    with pytest.raises(InvalidArgumentError, match="not a block of this cache"):
        engine.load(toks, block_ids=[bad_block, 3])
    assert all(torch.equal(a, b) for a, b in zip(src, before))  # block 0 untouched


def test_negative_block_ids_skip_their_tokens(make_engine):
    engine = make_engine()
    src = flash_attn_cache()
    engine.register_kv_caches(src)
    toks = tokens_of(16)
    engine.store(toks, block_ids=[4, 5])
    dst = [torch.zeros_like(t) for t in src]
    assert engine.load(toks, dst, block_ids=[-1, 7]) == 16  # the first block is skipped
    assert not dst[0][:, 0].any() and torch.equal(dst[0][:, 7], src[0][:, 5])


def test_slots_from_blocks_checks_before_multiplying():
    engine_layout = lmcache.layouts.describe(flash_attn_cache(), "vllm_flash_attn")
    assert list(_core.slots_from_blocks(engine_layout, np.array([2, 0]), 10)) == [16, 17, 18, 19, 20, 21, 22, 23, 0, 1]
    with pytest.raises(InvalidArgumentError, match="cannot hold"):
        _core.slots_from_blocks(engine_layout, np.array([1]), 9)


_HANDLE_OUTLIVES_TENSORS = textwrap.dedent("""
    import gc, sys, torch, numpy as np, lmcache
    sys.path.insert(0, {helpers!r})
    from kv_helpers import flash_attn_cache
    engine = lmcache.CacheEngine(lmcache.Config(chunk_size=16, l1_capacity_gb=0.05), model_id="m")
    src = flash_attn_cache(blocks=4096)
    engine.register_kv_caches(src)
    toks = list(range(64))
    engine.store(toks, block_ids=list(range(8)))
    {case}
    gc.collect()
    load.load_layers(1)
    load.load_layers(2)
    load.finish()
    engine.close()
    print("ok")
""")


@pytest.mark.parametrize("case", [
    # The target tensors given to the call, deleted before the load writes them.
    "dst = flash_attn_cache(blocks=4096, fill=False); load = engine.begin_load(toks, dst, block_ids=list(range(8)));"
    " del dst",
    # The registered caches replaced (and dropped) while a load into them is open.
    "load = engine.begin_load(toks, block_ids=list(range(8))); engine.register_kv_caches("
    "flash_attn_cache(blocks=4096)); del src",
])
def test_open_load_keeps_its_tensors_alive(case):
    # In a child process: before the fix this was a segfault (exit 139).
    helpers = os.path.dirname(__file__)
    code = _HANDLE_OUTLIVES_TENSORS.format(helpers=helpers, case=case)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize("make_view", [
    lambda: np.arange(4096, dtype=np.uint8)[::2],
    lambda: np.arange(4096, dtype=np.uint8)[::-1],
    lambda: np.arange(4096, dtype=np.uint8).reshape(64, 64).T,
])
def test_buffer_functions_refuse_strided_views(make_view):
    view = make_view()
    with pytest.raises(InvalidArgumentError, match="C-contiguous"):
        _core.checksum64(view)
    with pytest.raises(InvalidArgumentError, match="C-contiguous"):
        _core.payload_checksum(view, 1)


def test_import_record_refuses_a_strided_buffer(make_engine):
    engine = make_engine()
    engine.register_kv_caches(flash_attn_cache())
    rt = engine._runtime
    key = engine.chunk_keys(tokens_of(16))[0]
    big = np.zeros(2 * rt.record_bytes, dtype=np.uint8)
    with pytest.raises(InvalidArgumentError, match="C-contiguous"):
        rt.import_record(key, big[::2])


def test_contiguous_buffers_still_hash_as_before():
    data = np.arange(4096, dtype=np.uint8)
    assert _core.checksum64(data) == _core.checksum64(data.tobytes())
    assert _core.checksum64(data[::2].copy()) == _core.checksum64(bytes(data[::2]))


def test_slots_changed_by_another_thread_never_escape_the_cache(make_engine):
    """A thread rewrites the slot array to out-of-range values while loads
    run: every load either uses the slots it checked or is refused."""
    engine = make_engine()
    src = flash_attn_cache()
    engine.register_kv_caches(src)
    toks = tokens_of(32)
    engine.store(toks, block_ids=[0, 1, 2, 3])
    slots = np.arange(32, dtype=np.int64)
    stop = threading.Event()

    def flip():
        i = 0
        while not stop.is_set():
            slots[i % 32] = 10**12 if (i // 32) % 2 else i % 32
            i += 1

    t = threading.Thread(target=flip)
    t.start()
    try:
        for _ in range(300):
            try:
                engine.load(toks, slot_mapping=slots)
            except InvalidArgumentError:
                pass
    finally:
        stop.set()
        t.join()


def test_layout_without_caches_is_an_error_not_ignored(make_engine):
    engine = make_engine()
    engine.register_kv_caches(flash_attn_cache())
    toks = tokens_of(16)
    with pytest.raises(InvalidArgumentError, match="layout="):
        engine.store(toks, block_ids=[0, 1], layout="vllm_flashinfer")
    with pytest.raises(InvalidArgumentError, match="block_size="):
        engine.load(toks, block_ids=[0, 1], block_size=16)


def test_engine_in_a_forked_child_refuses_instead_of_losing_writes(make_engine, tmp_path):
    engine = make_engine(local_disk_path=str(tmp_path / "disk"))
    engine.register_kv_caches(flash_attn_cache())
    toks = tokens_of(32)
    engine.store(toks, block_ids=[0, 1, 2, 3])
    engine.flush_writes()
    pid = os.fork()
    if pid == 0:  # the child: every call is refused with a clear error, and close() does not hang
        code = 0
        try:
            engine.store(tokens_of(32, seed=5), block_ids=[4, 5, 6, 7])
            code = 2
        except InvalidStateError as e:
            code = 0 if "fork" in str(e) else 3
        try:
            engine.flush_writes()
            code = code or 4
        except InvalidStateError:
            pass
        engine.close()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert engine.lookup(toks) == 32  # the parent is unaffected
    engine.store(tokens_of(32, seed=6), block_ids=[4, 5, 6, 7])
    engine.flush_writes()
