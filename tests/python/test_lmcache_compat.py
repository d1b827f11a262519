"""LMCache's configuration, read as lmcache's: its YAML file and LMCACHE_*
variables map to lmcache's keys; keys with no equivalent are named once in a
warning; nothing LMCache users set stops start-up."""

import logging

import pytest

import lmcache
from lmcache import lmcache_compat
from lmcache.integration.vllm.vllm_v1_adapter import config_from_extra

# What LMCache's quickstarts and vLLM's LMCache examples set.
QUICKSTART_ENV = {"LMCACHE_CHUNK_SIZE": "256", "LMCACHE_LOCAL_CPU": "True", "LMCACHE_MAX_LOCAL_CPU_SIZE": "5.0"}


@pytest.fixture(autouse=True)
def fresh_warnings():
    lmcache_compat._warned.clear()
    yield


def test_quickstart_environment_maps_to_lmcache_keys():
    config, sources = lmcache.Config.load_with_sources(env=QUICKSTART_ENV)
    assert config.chunk_size == 256 and config.l1_capacity_gb == 5.0
    assert sources["l1_capacity_gb"] == "env LMCACHE_MAX_LOCAL_CPU_SIZE"
    assert sources["chunk_size"] == "env LMCACHE_CHUNK_SIZE"
    assert sources["local_disk_path"] == "default"


def test_lmcache_yaml_file_maps_every_documented_key(tmp_path):
    path = tmp_path / "lmcache.yaml"
    path.write_text(
        "chunk_size: 128\n"
        "local_cpu: true\n"
        "max_local_cpu_size: 2.5\n"
        f"local_disk: \"file://{tmp_path}/disk/\"\n"
        "max_local_disk_size: 7\n"
        "remote_url: \"redis://127.0.0.1:6379\"\n"
        "remote_serde: \"naive\"\n"
        "use_layerwise: true\n"
        "enable_blending: true\n"
        "blend_special_str: \"13,13\"\n"
        "blend_recompute_ratios: [0.2]\n"
        "blend_check_layers: [2]\n")
    config, sources = lmcache.Config.load_with_sources(env={"LMCACHE_CONFIG_FILE": str(path)})
    assert config.chunk_size == 128 and config.l1_capacity_gb == 2.5
    assert config.local_disk_path == f"{tmp_path}/disk/" and config.disk_capacity_gb == 7.0
    assert config.remote_url == "redis://127.0.0.1:6379" and config.remote_codec == "none"
    assert config.vllm.layerwise_load == "on"
    assert config.blend.enable_blending and config.blend.separator_ids() == [13, 13]
    assert config.blend.blend_recompute_share == 0.2 and config.blend.blend_check_layer == 2
    assert sources["disk_capacity_gb"] == f"file {path}"


def test_keys_without_equivalent_warn_once_and_start(tmp_path, caplog):
    path = tmp_path / "lmcache.yaml"
    path.write_text("chunk_size: 256\nlocal_cpu: false\nsave_decode_cache: true\nremote_url: \"lm://localhost:65432\"\n"
                    "remote_serde: cachegen\nsome_future_lmcache_key: 3\n")
    with caplog.at_level(logging.WARNING, logger="lmcache"):
        config = lmcache.Config.load(env={"LMCACHE_CONFIG_FILE": str(path), "LMCACHE_SAVE_DECODE_CACHE": "True"})
        lmcache.Config.load(env={"LMCACHE_CONFIG_FILE": str(path)})
    assert config.remote_url == "" and config.remote_codec == "none" and config.chunk_size == 256
    text = caplog.text
    for name in ("save_decode_cache", "local_cpu", "remote_url", "remote_serde", "some_future_lmcache_key"):
        assert name in text, name
    assert text.count("save_decode_cache") == 1  # once, whether from the file or the environment
    assert "lm://" not in text  # a URL is never echoed (it may hold a password)


def test_lmcache_own_files_stay_strict(tmp_path):
    # A file of lmcache's own keys still refuses a typo.
    path = tmp_path / "lmcache.yaml"
    path.write_text("chunk_size: 256\nl1_capacity_gbb: 3\n")
    with pytest.raises(lmcache.ConfigError, match="l1_capacity_gbb"):
        lmcache.Config.load(str(path))


def test_a_mapped_bad_value_is_named_by_lmcache_key():
    with pytest.raises(lmcache.ConfigError, match="l1_capacity_gb"):
        lmcache.Config.load(env={"LMCACHE_MAX_LOCAL_CPU_SIZE": "lots"})


def test_unrelated_environment_never_stops_startup(caplog):
    with caplog.at_level(logging.WARNING, logger="lmcache"):
        config = lmcache.Config.load(env={**QUICKSTART_ENV, "LMCACHE_UNRELATED_TOOL_SETTING": "x", "LMCACHE_USE_EXPERIMENTAL": "True"})
    assert config.l1_capacity_gb == 5.0 and "LMCACHE_UNRELATED_TOOL_SETTING" in caplog.text


def test_drop_in_extra_config_takes_lmcache_names_and_prefix(monkeypatch, caplog):
    for name in list(__import__("os").environ):
        if name.startswith("LMCACHE_"):
            monkeypatch.delenv(name)
    with caplog.at_level(logging.WARNING, logger="lmcache"):
        config = config_from_extra({"use_native": False, "lmcache.max_local_cpu_size": 1.5, "chunk_size": 64,
                                    "use_layerwise": False, "discard_partial_chunks": True})
    assert config.l1_capacity_gb == 1.5 and config.chunk_size == 64 and config.vllm.layerwise_load == "off"
    assert "discard_partial_chunks" in caplog.text


def test_log_level_from_lmcache_variable():
    assert lmcache.Config.load(env={"LMCACHE_LOG_LEVEL": "DEBUG"}).control.log_level == "debug"
