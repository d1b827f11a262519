"""Where the key that authenticates records comes from, and that a record
written under one secret is refused under another."""

import hashlib
import os

import numpy as np
import pytest
import torch
from kv_helpers import flash_attn_cache

import lmcache
from lmcache import ConfigError, _core
from lmcache.record_key import derive_record_key, record_key

SECRET = "0123456789abcdef0123456789abcdef"


def test_remote_tier_without_a_secret_is_refused_with_the_way_out():
    with pytest.raises(ConfigError, match="auth_secret_file"):
        lmcache.CacheEngine(lmcache.Config(remote_url="redis://127.0.0.1:1"), model_id="m")


def test_secret_file_must_be_private(tmp_path):
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        record_key(lmcache.Config(auth_secret_file=str(path)))
    os.chmod(path, 0o600)
    assert record_key(lmcache.Config(auth_secret_file=str(path))) == derive_record_key(SECRET.encode())
    link = tmp_path / "link"
    link.symlink_to(path)
    with pytest.raises(ConfigError, match="cannot open"):
        record_key(lmcache.Config(auth_secret_file=str(link)))


def test_short_or_doubled_secrets_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="16 bytes"):
        record_key(lmcache.Config(auth_secret="short"))
    path = tmp_path / "s"
    path.write_text(SECRET)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="not both"):
        record_key(lmcache.Config(auth_secret=SECRET, auth_secret_file=str(path)))


def test_secret_from_the_environment():
    c = lmcache.Config.load(env={"LMCACHE_AUTH_SECRET": SECRET})
    assert record_key(c) == derive_record_key(SECRET.encode())
    assert SECRET not in repr(c)


def test_native_key_id_is_the_documented_digest():
    key = derive_record_key(SECRET.encode())
    expected = int.from_bytes(hashlib.sha256(b"lmcache-key-id\0" + key).digest()[:8], "little")
    assert _core.record_key_id(key) == expected


def _engine(disk, secret):
    cfg = lmcache.Config(chunk_size=16, l1_capacity_gb=0.05, local_disk_path=str(disk), auth_secret=secret)
    return lmcache.CacheEngine(cfg, model_id="m")


def test_disk_records_of_another_secret_are_refused(tmp_path):
    src = flash_attn_cache()
    toks = list(range(48))
    with _engine(tmp_path, SECRET) as e:
        e.register_kv_caches(src)
        e.store(toks, block_ids=[0, 1, 2, 3, 4, 5])
        e.flush_writes()
    dst = [torch.zeros_like(t) for t in src]
    with _engine(tmp_path, "another-secret-of-at-least-16") as e:
        e.register_kv_caches(dst)
        assert e.load(toks, block_ids=[0, 1, 2, 3, 4, 5]) == 0
        assert e.stats()["load_errors"] >= 1
    assert not any(t.any() for t in dst)
