"""The disk tier through CacheEngine and Config: persistence across engines,
both I/O backends, clear errors for bad settings."""

import pytest
import torch
from kv_helpers import flash_attn_cache

import lmcache


def engine(path, **kw):
    cfg = lmcache.Config(chunk_size=16, l1_capacity_gb=0.01, local_disk_path=str(path), disk_lock_timeout_s=0.2, **kw)
    return lmcache.CacheEngine(cfg, model_id="m")


@pytest.mark.parametrize("backend", ["auto", "threads"])
def test_survives_a_new_engine(tmp_path, backend):
    src = flash_attn_cache(blocks=16)
    toks = list(range(500, 564))
    with engine(tmp_path, disk_io_backend=backend) as e:
        assert e.disk_backend.startswith("io_uring" if backend == "auto" else "threads") or backend == "auto"
        e.register_kv_caches(src)
        e.store(toks, block_ids=list(range(8)))
    # A new engine (as after a restart) finds every chunk on disk.
    with engine(tmp_path, disk_io_backend=backend) as e:
        e.register_kv_caches(flash_attn_cache(blocks=16, fill=False))
        assert e.lookup(toks) == 64
        dst = [torch.zeros_like(t) for t in src]
        assert e.load(toks, dst, block_ids=list(range(8, 16))) == 64
        s = e.stats()
        assert s["disk_recovered_records"] == 4 and s["promoted_chunks"] == 4 and s["load_errors"] == 0
    for a, b in zip(src, dst):
        assert torch.equal(a[:, :8], b[:, 8:16])


def test_clear_host_tier_only_then_everything(tmp_path):
    with engine(tmp_path) as e:
        e.register_kv_caches(flash_attn_cache(blocks=16))
        toks = list(range(32))
        e.store(toks, block_ids=[0, 1, 2, 3])
        e.flush_writes()
        e.clear(include_disk=False)
        assert e.lookup(toks) == 32  # still on disk
        e.clear()
        assert e.lookup(toks) == 0


def test_second_engine_on_the_same_directory_names_the_lock(tmp_path):
    with engine(tmp_path):
        with pytest.raises(lmcache.InvalidStateError, match="/.lock is held"):
            engine(tmp_path)


def test_unusable_directory_is_a_clear_error(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    with pytest.raises(lmcache.LMCacheError):
        engine(f)
    with pytest.raises(lmcache.ConfigError, match="disk_io_backend"):
        lmcache.Config(disk_io_backend="spdk")


def test_directory_others_can_write_to_is_refused_naming_it(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(lmcache.InvalidArgumentError, match=f"{shared}.*writable by group or others"):
        engine(shared)
    assert list(shared.iterdir()) == []  # nothing was made in it


def test_records_are_private_and_foreign_files_survive(tmp_path):
    foreign = {"0123456789abcdef0123456789abcdef.tmp": "a", "fedcba9876543210fedcba9876543210.lmc": "b",
               "notes.tmp": "c", "data.lmc": "d"}
    for name, text in foreign.items():
        (tmp_path / name).write_text(text)
    with engine(tmp_path) as e:
        e.register_kv_caches(flash_attn_cache(blocks=16))
        e.store(list(range(32)), block_ids=[0, 1, 2, 3])
        e.flush_writes()
        records = tmp_path / "lmcache-records"
        assert records.stat().st_mode & 0o777 == 0o700
        files = list(records.glob("*.lmc"))
        assert len(files) == 2 and all(f.stat().st_mode & 0o777 == 0o600 for f in files)
        e.clear()
    for name, text in foreign.items():
        assert (tmp_path / name).read_text() == text
