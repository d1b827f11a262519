import pytest

from lmcache import Config, ConfigError, InvalidArgumentError


def test_defaults():
    c = Config()
    assert c.chunk_size == 256
    assert c.eviction_policy == "lru"
    assert c.verify_l1_checksums is False


def test_sources_in_order(tmp_path):
    path = tmp_path / "lmcache.yaml"
    path.write_text("chunk_size: 128\nl1_capacity_gb: 1.5\nmodel_id: from-yaml\n")
    env = {"LMCACHE_CHUNK_SIZE": "64", "LMCACHE_VERIFY_L1_CHECKSUMS": "yes", "UNRELATED": "x"}
    c = Config.load(str(path), env=env, overrides={"model_id": "from-overrides"})
    assert c.chunk_size == 64  # env beats YAML
    assert c.l1_capacity_gb == 1.5  # YAML beats default
    assert c.verify_l1_checksums is True
    assert c.model_id == "from-overrides"  # overrides beat everything


def test_config_file_from_env(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("chunk_size: 32\n")
    assert Config.load(env={"LMCACHE_CONFIG_FILE": str(path)}).chunk_size == 32


@pytest.mark.parametrize(
    "source",
    ["yaml", "overrides"],
)
def test_unknown_key_names_key_and_allowed(tmp_path, source):
    path = None
    env, overrides = {}, None
    if source == "yaml":
        path = tmp_path / "c.yaml"
        path.write_text("chunk_sise: 32\n")
        path = str(path)
    elif source == "env":
        env = {"LMCACHE_CHUNK_SISE": "32"}
    else:
        overrides = {"chunk_sise": 32}
    with pytest.raises(ConfigError) as e:
        Config.load(path, env=env, overrides=overrides)
    msg = str(e.value)
    assert "chunk_sise" in msg.lower() or "CHUNK_SISE" in msg
    assert "chunk_size" in msg.lower()  # the allowed keys are listed


@pytest.mark.parametrize(
    "key,value,fragment",
    [
        ("chunk_size", "many", "not an integer"),
        ("chunk_size", 0, "below the minimum"),
        ("chunk_size", 2.5, "not an integer"),
        ("l1_capacity_gb", "lots", "not a finite number"),
        ("l1_capacity_gb", "nan", "not a finite number"),
        ("l1_capacity_gb", float("inf"), "not a finite number"),
        ("remote_timeout_s", "-inf", "not a finite number"),
        ("disk_lock_timeout_s", float("nan"), "not a finite number"),
        ("chunk_size", float("inf"), "not an integer"),
        ("chunk_size", "9" * 5000, "not an integer"),
        ("num_copy_threads", 100000, "above the maximum"),
        ("chunk_size", 1 << 30, "above the maximum"),
        ("remote_timeout_s", 1e9, "above the maximum"),
        ("fault_load_rate", 2.0, "above the maximum"),
        ("l1_capacity_gb", -1, "below the minimum"),
        ("eviction_policy", "fifo", "'lru'"),
        ("verify_l1_checksums", "maybe", "true or false"),
        ("model_id", 7, "not a string"),
    ],
)
def test_bad_values(key, value, fragment):
    with pytest.raises(ConfigError) as e:
        Config.load(env={}, overrides={key: value})
    assert key in str(e.value) and fragment in str(e.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, InvalidArgumentError)
    assert issubclass(ConfigError, ValueError)


def test_bad_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        Config.load(str(path), env={})
    with pytest.raises(ConfigError, match="cannot read"):
        Config.load(str(tmp_path / "missing.yaml"), env={})


def test_frozen_and_replace():
    c = Config()
    with pytest.raises(Exception):
        c.chunk_size = 1
    assert c.replace(chunk_size=16).chunk_size == 16
    with pytest.raises(ConfigError):
        c.replace(nope=1)
    assert "chunk_size" in Config.describe()


def test_unrelated_environment_variable_warns_and_starts(caplog):
    """Other software shares the LMCACHE_ prefix: a variable that is not a key
    is named once in a warning and never stops start-up."""
    env = {"LMCACHE_SOMETHING_ELSE": "1", "LMCACHE_CHUNK_SIZE": "32"}
    with caplog.at_level("WARNING", logger="lmcache.config"):
        assert Config.load(env=env).chunk_size == 32
        Config.load(env=env)
    named = [r for r in caplog.records if "LMCACHE_SOMETHING_ELSE" in r.getMessage()]
    assert len(named) == 1


def test_repr_shows_no_secret_or_password():
    c = Config(auth_secret="s3cr3t-value-0123456789", remote_url="redis://user:pa@ss:w0rd@cache-host:6379/0")
    text = repr(c)
    assert "s3cr3t" not in text and "pa@ss" not in text and "w0rd" not in text and "ss:w" not in text
    assert "cache-host:6379/0" in text and "user" in text
    assert "s3cr3t" not in str(c)


@pytest.mark.parametrize("url", [
    "redis://u:XpassX@YpassY:ZpassZ@h:1/0",
    "rediss://:XpassX@YpassY@h:1",
    "redis+cluster://u:XpassX@YpassY@h1:1,h2:2",
    "redis://u:XpassX@h",
])
def test_redact_url_hides_every_part_of_the_password(url):
    from lmcache.config import redact_url

    shown = redact_url(url)
    for piece in ("XpassX", "YpassY", "ZpassZ"):
        assert piece not in shown
    assert "***" in shown and shown.endswith(url.rsplit("@", 1)[1])


def test_bad_secret_value_is_not_echoed():
    with pytest.raises(ConfigError) as e:
        Config.load(env={}, overrides={"auth_secret": 12345678901234567})
    assert "12345678901234567" not in str(e.value)


@pytest.mark.parametrize("text", ["chunk_size: !!float 1e1,b}]\n", "chunk_size: !!float _\n", "a: !!int x\n",
                                  "a: !!timestamp 2020-99-99\n", "a: " + "[" * 5000 + "]" * 5000 + "\n"])
def test_yaml_constructor_errors_are_config_errors(tmp_path, text):
    # Found by tests/fuzz/fuzz_config.py: YAML's constructors raised a bare ValueError, then an IndexError.
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="not valid YAML"):
        Config.load(str(path), env={})


def test_adapter_and_test_keys_live_in_typed_sections(tmp_path):
    from lmcache.config import TestingOptions, VllmOptions

    c = Config(layerwise_load="on", fault_seed=3, chunk_size=64)
    assert isinstance(c.vllm, VllmOptions) and isinstance(c.testing, TestingOptions)
    assert c.vllm.layerwise_load == "on" and c.testing.fault_seed == 3 and c.chunk_size == 64
    assert not hasattr(c, "layerwise_load")  # one place to read it: its section
    assert c["layerwise_load"] == "on" and dict(c.items())["fault_seed"] == 3
    assert c.replace(async_store="off").vllm.async_store == "off" and c.replace(async_store="off").chunk_size == 64
    with pytest.raises(Exception):
        c.vllm.layerwise_load = "off"  # frozen all the way down
    # Sources give section keys flat, or a section whole.
    path = tmp_path / "c.yaml"
    path.write_text("vllm:\n  lookup_timeout_s: 2.5\ntesting:\n  fault_load_rate: 0.5\n")
    c = Config.load(str(path), env={"LMCACHE_ASYNC_STORE": "on"})
    assert (c.vllm.lookup_timeout_s, c.vllm.async_store, c.testing.fault_load_rate) == (2.5, "on", 0.5)
    with pytest.raises(ConfigError, match="'lookup_timeout'.*section 'vllm'.*lookup_timeout_s"):
        Config.load(env={}, overrides={"vllm": {"lookup_timeout": 1}})
    with pytest.raises(ConfigError, match="'lookup_timeout_s'.*below the minimum"):
        Config(lookup_timeout_s=0)


def test_yaml_on_and_off_reach_string_keys_that_take_them(tmp_path):
    # YAML 1.1 reads a bare on/off as a bool; for a key whose choices are
    # on/off that is what the writer meant.
    path = tmp_path / "c.yaml"
    path.write_text("layerwise_load: on\nvllm:\n  async_store: off\n")
    c = Config.load(str(path), env={})
    assert (c.vllm.layerwise_load, c.vllm.async_store) == ("on", "off")
    with pytest.raises(ConfigError, match="'eviction_policy': True is not a string"):
        Config(eviction_policy=True)


def test_every_key_is_visible_to_type_checkers():
    import typing

    from lmcache.config import TestingOptions, VllmOptions

    hints = typing.get_type_hints(Config)
    assert hints["chunk_size"] is int and hints["l1_capacity_gb"] is float and hints["encrypt_records"] is bool
    assert hints["vllm"] is VllmOptions and hints["testing"] is TestingOptions
    assert typing.get_type_hints(VllmOptions)["lookup_timeout_s"] is float
    section_keys = set(typing.get_type_hints(VllmOptions)) | set(typing.get_type_hints(TestingOptions))
    from lmcache.config import BlendOptions, ControlOptions, ServerOptions

    for section in (BlendOptions, ControlOptions, ServerOptions):
        section_keys |= set(typing.get_type_hints(section))
    assert set(Config.keys()) == ((set(hints) - {"vllm", "blend", "control", "server", "testing"}) | section_keys
                                  - {"NAME", "__test__"})


def test_blend_separator_is_checked_when_the_config_is_made():
    assert Config().blend.separator_ids() == []
    assert Config(blend_separator=" 13, 13 ").blend.separator_ids() == [13, 13]
    for bad in ("a,b", "1,,2", "-1", str(1 << 40), ",".join(["1"] * 65)):
        with pytest.raises(ConfigError, match="'blend_separator'"):
            Config(blend_separator=bad)
