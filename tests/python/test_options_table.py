"""The runtime's options and stats come from one native table: Config,
Runtime(**options) and stats() must agree with it."""

import dataclasses

import pytest

from lmcache import CacheEngine, Config, InvalidArgumentError, _core
from lmcache.config import RUNTIME_KEYS, SECTIONS


def test_config_takes_the_native_keys_from_the_table():
    fields = {f.name: f for f in dataclasses.fields(Config)}
    table = _core.option_table()
    assert [row["name"] for row in table if row["section"] == "runtime"] == list(RUNTIME_KEYS)
    assert {row["section"] for row in table} == {"runtime", "remote", "security"}
    for row in table:
        f = fields[row["name"]]
        assert f.type == row["type"] and f.default == row["default"] and type(f.default) is type(row["default"])
        assert f.metadata["doc"] == row["doc"] and f.metadata["section"] == row["section"]
        assert f.metadata["minimum"] == row["minimum"] and f.metadata["maximum"] == row["maximum"]
        assert f.metadata["choices"] == row["choices"] and f.metadata["secret"] == row["secret"]
    # The C API reads the remote tier's keys and the secret from the same rows.
    assert fields["remote_codec"].metadata["choices"] == ("none", "zstd", "lz4", "fp8")
    assert [row["name"] for row in table if row["secret"]] == ["auth_secret"]
    assert Config().l1_capacity_gb == 2.0 and Config().disk_capacity_gb == 16.0
    assert fields["key_scheme"].metadata["choices"] == ("lmcache", "sglang")


def test_describe_lists_every_key_by_section():
    text = Config.describe()
    for section in SECTIONS:
        assert f"{section}:\n" in text or text.startswith(f"{section}:")
    for name in Config.keys():
        assert f"  {name} (" in text
    # A key sits under its own section's heading.
    assert text.index("remote:") < text.index("  remote_url (") < text.index("security:")
    assert text.index("testing:") < text.index("  fault_seed (")


def test_runtime_options_round_trip():
    c = Config(l1_capacity_gb=0.5, chunk_size=32, disk_io_backend="threads")
    options = c.runtime_options()
    assert set(options) == set(RUNTIME_KEYS)
    rt = _core.Runtime(**options, tp_rank=1, tp_size=2, record_key=b"")
    try:
        assert rt.chunk_size == 32
        assert rt.stats()["l1_capacity_bytes"] == 1 << 29
    finally:
        rt.close()


def test_runtime_refuses_unknown_keys_and_bad_values():
    with pytest.raises(InvalidArgumentError) as e:
        _core.Runtime(chunk_sise=32, l1_capacity_bytes=1)
    assert "'chunk_sise'" in str(e.value) and "'l1_capacity_bytes'" in str(e.value)
    assert "chunk_size" in str(e.value)  # what is allowed
    for kwargs, fragment in [({"chunk_size": 0}, "below the minimum 1"),
                             ({"chunk_size": True}, "not an integer"),
                             ({"l1_capacity_gb": float("nan")}, "not a finite number"),
                             ({"key_scheme": "other"}, "'lmcache', 'sglang'"),
                             ({"model_id": None}, "not a bool, int, float or str"),
                             ({"record_key": "text"}, "bytes")]:
        with pytest.raises(InvalidArgumentError, match=fragment):
            _core.Runtime(**kwargs)
    with pytest.raises(TypeError):
        _core.Runtime(256)  # keywords only
    # The remote tier's and the secret's keys are read around the runtime, not by it.
    with pytest.raises(InvalidArgumentError, match="'remote_url'"):
        _core.Runtime(remote_url="redis://127.0.0.1:1")
    with pytest.raises(InvalidArgumentError, match="'auth_secret'"):
        _core.Runtime(auth_secret="x" * 20)


def test_stats_follow_the_table(tmp_path):
    names = {row["name"]: row for row in _core.stat_table()}
    assert {"hash_passes", "hashed_tokens", "disk_enabled", "disk_reads"} <= set(names)
    plain = CacheEngine(Config(l1_capacity_gb=0.01))
    try:
        s = plain._runtime.stats()
        assert s["disk_enabled"] is False and "hash_passes" in s
        assert set(s) == {n for n, row in names.items() if not row["disk_only"] and not row["remote_only"]}
    finally:
        plain.close()
    disk = CacheEngine(Config(l1_capacity_gb=0.01, local_disk_path=str(tmp_path / "d"), disk_capacity_gb=0.01))
    try:
        s = disk._runtime.stats()
        assert s["disk_enabled"] is True and set(s) == {n for n, row in names.items() if not row["remote_only"]}
        assert s["disk_capacity_bytes"] == int(0.01 * (1 << 30))  # GiB to bytes in one place: the runtime
    finally:
        disk.close()
