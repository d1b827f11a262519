"""One typed, frozen configuration for lmcache.

Sources, later ones winning: the defaults, a YAML file (``path`` or the
``LMCACHE_CONFIG_FILE`` environment variable), ``LMCACHE_<KEY>`` environment
variables, and a dict of overrides (an engine's extra-config). Every key has
one flat name, used by every source; unknown keys and bad values raise
:class:`ConfigError` naming the key and what is allowed.

The native keys (the runtime's, the remote tier's and the secret's: their
defaults, limits, choices and docs) come from the native table, the one the
C API reads too, and are attributes of Config itself. The keys that only an
adapter or the tests read are declared below in typed sections of their own
(``config.vllm``, ``config.blend``, ``config.testing``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Optional

from lmcache import _core
from lmcache.errors import ConfigError

logger = logging.getLogger(__name__)

ENV_PREFIX = "LMCACHE_"
ENV_CONFIG_FILE = "LMCACHE_CONFIG_FILE"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _field(default: Any, doc: str, *, section: str, minimum: Optional[float] = None,
           maximum: Optional[float] = None, choices: Optional[tuple] = None, secret: bool = False):
    # A secret field is never shown: repr() leaves it out (see Config.__repr__).
    return field(default=default, repr=not secret,
                 metadata={"doc": doc, "minimum": minimum, "maximum": maximum, "choices": choices, "secret": secret,
                           "section": section})


# The native keys, with their sections, defaults, limits, choices and docs,
# come from one table (cpp/runtime/runtime_options.def) so that Python, the
# C API and the runtime cannot disagree.
_NATIVE_TABLE = {row["name"]: row for row in _core.option_table()}
# What Runtime(**options) takes; the table's remote and security keys are
# read around the runtime (lmcache.remote, lmcache.record_key).
RUNTIME_KEYS = tuple(name for name, row in _NATIVE_TABLE.items() if row["section"] == "runtime")

_MAX_SECONDS = 24 * 3600.0  # a timeout beyond a day is a mistake, not a wish (as in the native table)

_NATIVE: Any = object()  # marks a Config field whose default, limits and doc come from the native table


def _from_native_table(cls: type) -> type:
    """Fills in every `name: type = _NATIVE` field of `cls` from the native
    table's row of that name, and checks that the class declares each row
    once with the row's type: the names are written here so that type
    checkers and editors see them, the rest only in the table."""
    declared = {name for name, value in vars(cls).items() if value is _NATIVE}
    if declared != set(_NATIVE_TABLE):
        raise AssertionError(f"Config and the native option table differ: "
                             f"{sorted(declared ^ set(_NATIVE_TABLE))}")
    for name in declared:
        row = _NATIVE_TABLE[name]
        if cls.__annotations__[name] != row["type"]:
            raise AssertionError(f"Config.{name} is declared {cls.__annotations__[name]}, the table says {row['type']}")
        setattr(cls, name, _field(row["default"], row["doc"], section=row["section"], minimum=row["minimum"],
                                  maximum=row["maximum"], choices=row["choices"], secret=row["secret"]))
    return cls


class _Section:
    """Keys that only one adapter or the tests read, grouped as a typed,
    frozen value of their own (config.vllm.layerwise_load). Their names are
    unique across sections, so sources still give them flat
    (layerwise_load: on, LMCACHE_LAYERWISE_LOAD=on)."""

    NAME: ClassVar[str]

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f, getattr(self, f.name)))


@dataclass(frozen=True)
class VllmOptions(_Section):
    """What only the vLLM connector reads."""

    NAME: ClassVar[str] = "vllm"
    lookup_timeout_s: float = _field(
        5.0, "vLLM: scheduler-to-worker lookup timeout; a timeout is a miss.", section="vllm", minimum=0.001,
        maximum=_MAX_SECONDS)
    load_failure_policy: str = _field(
        "recompute", "vLLM: what a load that fails after a hit becomes.", section="vllm",
        choices=("recompute", "fail"))
    layerwise_load: str = _field(
        "auto", "vLLM: load layer by layer, each layer waited for just before its attention (on a GPU the copy of "
        "layer i+1 overlaps the compute of layer i): auto (on for GPU caches when lmcache has CUDA), on, off "
        "(one load before the forward pass).", section="vllm", choices=("auto", "on", "off"))
    async_store: str = _field(
        "auto", "vLLM: begin stores after the forward pass and publish them from a thread of lmcache's, so the "
        "engine's thread never waits for a store copy: auto (on for GPU caches when lmcache has CUDA), on, off.",
        section="vllm", choices=("auto", "on", "off"))


@dataclass(frozen=True)
class BlendOptions(_Section):
    """Reuse of repeated text anywhere in a prompt (KV blending), in vLLM."""

    NAME: ClassVar[str] = "blend"
    enable_blending: bool = _field(
        False, "Blending: cache each segment of a prompt on its own and reuse it wherever it comes back, "
        "recomputing the tokens that suffer most from its new context (vLLM; see README).", section="blend")
    blend_separator: str = _field(
        "", "Blending: the token ids that separate a prompt's segments, comma-separated (\"13,13\"). A request "
        "may instead pass where its segments start in kv_transfer_params[\"lmcache_segment_offsets\"].",
        section="blend")
    blend_recompute_share: float = _field(
        0.15, "Blending: share of a reused segment's tokens recomputed, those whose KV deviates most from what "
        "this prompt would give.", section="blend", minimum=0.0, maximum=1.0)
    blend_check_layer: int = _field(
        1, "Blending: the layer at which deviations are measured; the layers before it are computed for every "
        "token.", section="blend", minimum=0, maximum=1024)
    blend_l1_capacity_gb: float = _field(
        1.0, "Blending: host memory for segment KV in GiB (beside l1_capacity_gb; the disk and remote tiers are "
        "shared).", section="blend", minimum=0.0, maximum=1048576.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.separator_ids()  # checked once, when the config is made

    def separator_ids(self) -> list[int]:
        """blend_separator as token ids ([] when blending is off)."""
        text = self.blend_separator.strip()
        if not text:
            return []
        try:
            ids = [int(part) for part in text.split(",")]
        except ValueError:
            ids = []
        if not ids or any(not 0 <= i < 1 << 32 for i in ids) or len(ids) > 64:
            raise ConfigError(f"config key 'blend_separator': {self.blend_separator!r} is not a comma-separated "
                              "list of at most 64 token ids")
        return ids


@dataclass(frozen=True)
class ControlOptions(_Section):
    """The HTTP control API and metrics (lmcache.control), and logging."""

    NAME: ClassVar[str] = "control"
    control_port: int = _field(
        0, "Control API and Prometheus metrics: the TCP port of each process that owns a cache (0: off; a "
        "tensor-parallel rank r serves on control_port + r).", section="control", minimum=0, maximum=65535)
    control_host: str = _field(
        "127.0.0.1", "Control API: the address to bind. Anything but a loopback address requires control_token "
        "(or control_token_file).", section="control")
    control_token: str = _field(
        "", "Control API: the bearer token every request must carry (Authorization: Bearer ...).",
        section="control", secret=True)
    control_token_file: str = _field(
        "", "Control API: a file (mode 0600) holding the bearer token, instead of control_token.", section="control")
    log_level: str = _field(
        "info", "Level of lmcache's loggers (the 'lmcache' logger tree).", section="control",
        choices=("debug", "info", "warning", "error", "critical"))

    def __post_init__(self) -> None:
        if isinstance(self.log_level, str):  # LMCACHE_LOG_LEVEL=DEBUG, as LMCache's users write it
            object.__setattr__(self, "log_level", self.log_level.strip().lower())
        super().__post_init__()

    def token(self) -> str:
        """The bearer token ('' without one); read from control_token_file when given."""
        if self.control_token:
            return self.control_token
        if not self.control_token_file:
            return ""
        try:
            st = os.stat(self.control_token_file)
            if st.st_mode & 0o077:
                raise ConfigError(f"config key 'control_token_file': {self.control_token_file!r} is readable by "
                                  "others; chmod 600 it")
            with open(self.control_token_file, encoding="utf-8") as f:
                token = f.read(4096).strip()
        except OSError as e:
            raise ConfigError(f"config key 'control_token_file': cannot read {self.control_token_file!r}: "
                              f"{e.strerror}") from None
        if not token:
            raise ConfigError(f"config key 'control_token_file': {self.control_token_file!r} is empty")
        return token


@dataclass(frozen=True)
class ServerOptions(_Section):
    """The node server (`lmcache server`) and the engines attached to it."""

    NAME: ClassVar[str] = "server"
    server_socket: str = _field(
        "", "The node server's Unix socket: engines with it set use the server's cache instead of one of their "
        "own; `lmcache server` serves it. Its directory belongs to the server's user.", section="server")
    server_lease_timeout_s: float = _field(
        30.0, "Server: chunks an engine reads or writes are held at most this long, then taken back (a hung "
        "engine cannot pin the pool).", section="server", minimum=0.1, maximum=_MAX_SECONDS)
    server_reconnect_s: float = _field(
        1.0, "Engine: while the server is away, lookups are misses and attaching is retried this often.",
        section="server", minimum=0.01, maximum=3600.0)
    server_allowed_uids: str = _field(
        "", "Server: other users allowed to attach, comma-separated uids (the server's own user always is).",
        section="server")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.allowed_uids()  # checked once, when the config is made

    def allowed_uids(self) -> list[int]:
        text = self.server_allowed_uids.strip()
        try:
            uids = [int(part) for part in text.split(",")] if text else []
        except ValueError:
            uids = [-1]
        if any(not 0 <= u < 1 << 31 for u in uids):
            raise ConfigError(f"config key 'server_allowed_uids': {self.server_allowed_uids!r} is not a "
                              "comma-separated list of uids")
        return uids


@dataclass(frozen=True)
class TestingOptions(_Section):
    """Fault injection, for tests that prove failures become misses."""

    __test__: ClassVar[bool] = False  # not a pytest class, whatever its name
    NAME: ClassVar[str] = "testing"
    fault_load_rate: float = _field(
        0.0, "Testing: share of loads made to fail (chunk corrupted or dropped).", section="testing", minimum=0.0,
        maximum=1.0)
    fault_seed: int = _field(0, "Testing: seed of the fault injector.", section="testing")
    fault_load_max: int = _field(0, "Testing: faults injected at most (0: no limit).", section="testing", minimum=0)


_SECTION_TYPES: tuple = (VllmOptions, BlendOptions, ControlOptions, ServerOptions, TestingOptions)
SECTIONS = ("runtime", "remote", "security") + tuple(s.NAME for s in _SECTION_TYPES)


@dataclass(frozen=True, init=False, repr=False)
@_from_native_table
class Config:
    """lmcache's configuration: one frozen, typed value per key.

    Config(**keys), Config.load(...) and replace(...) take flat keys (every
    key's name is unique); adapter and test keys are read through their
    section (config.vllm, config.testing). Config.describe() lists them all.
    """

    # runtime: read by the native runtime (Runtime(**config.runtime_options()))
    chunk_size: int = _NATIVE
    l1_capacity_gb: float = _NATIVE
    num_copy_threads: int = _NATIVE
    eviction_policy: str = _NATIVE
    model_id: str = _NATIVE
    tenant_salt: str = _NATIVE
    l1_shared_memory: bool = _NATIVE
    verify_l1_checksums: bool = _NATIVE
    key_scheme: str = _NATIVE
    local_disk_path: str = _NATIVE
    disk_capacity_gb: float = _NATIVE
    disk_io_backend: str = _NATIVE
    disk_queue_depth: int = _NATIVE
    write_behind_chunks: int = _NATIVE
    disk_lock_timeout_s: float = _NATIVE
    encrypt_records: bool = _NATIVE
    # remote: the shared tier (lmcache.remote, or the C API's native client)
    remote_url: str = _NATIVE
    remote_timeout_s: float = _NATIVE
    remote_codec: str = _NATIVE
    remote_queue_chunks: int = _NATIVE
    remote_tls_ca_file: str = _NATIVE
    remote_tls_cert_file: str = _NATIVE
    remote_tls_key_file: str = _NATIVE
    # security: the secret behind the record key
    auth_secret: str = _NATIVE
    auth_secret_file: str = _NATIVE
    # sections of their own
    vllm: VllmOptions = field(default_factory=VllmOptions)
    blend: BlendOptions = field(default_factory=BlendOptions)
    control: ControlOptions = field(default_factory=ControlOptions)
    server: ServerOptions = field(default_factory=ServerOptions)
    testing: TestingOptions = field(default_factory=TestingOptions)

    def __init__(self, **values: Any) -> None:
        values = _check_keys(values, "Config()")
        for f in dataclasses.fields(self):
            if f.name in _SECTION_FIELDS:
                section = f.default_factory
                mine = {k: values[k] for k in _keys_of(section) if k in values}
                object.__setattr__(self, f.name, section(**mine))
            else:
                object.__setattr__(self, f.name, _coerce(f, values.get(f.name, f.default)))

    # ------------------------------------------------------------------ sources
    @classmethod
    def load(
        cls,
        path: Optional[str] = None,
        *,
        env: Optional[Mapping[str, str]] = None,
        overrides: Optional[Mapping[str, Any]] = None,
    ) -> "Config":
        """Builds a config from defaults < YAML file < environment < overrides.

        The YAML file and the environment may use LMCache's names too
        (lmcache.lmcache_compat maps them)."""
        return cls.load_with_sources(path, env=env, overrides=overrides)[0]

    @classmethod
    def load_with_sources(
        cls,
        path: Optional[str] = None,
        *,
        env: Optional[Mapping[str, str]] = None,
        overrides: Optional[Mapping[str, Any]] = None,
    ) -> tuple["Config", dict[str, str]]:
        """Config.load, and where each key's value came from ("default",
        "file PATH", "env LMCACHE_X", "overrides")."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        path = path or env.get(ENV_CONFIG_FILE)
        if path:
            from_file = _read_yaml(path)
            values.update(from_file)
            sources.update({k: f"file {path}" for k in from_file})
        from_env, env_names = _read_env(env)
        values.update(from_env)
        sources.update({k: f"env {env_names[k]}" for k in from_env})
        if overrides:
            given = _check_keys(dict(overrides), "overrides")
            values.update(given)
            sources.update({k: "overrides" for k in given})
        config = cls(**values)
        return config, {k: sources.get(k, "default") for k in cls.keys()}

    def __repr__(self) -> str:
        # Secrets are left out; a password inside a URL is masked.
        shown = []
        for name, value in self.items():
            if _SPECS[name].metadata["secret"]:
                continue
            if name == "remote_url" and value:
                value = redact_url(value)
            shown.append(f"{name}={value!r}")
        return f"Config({', '.join(shown)})"

    def items(self) -> list[tuple[str, Any]]:
        """Every key and its value, flat, in describe() order (secrets included: not for logs)."""
        return [(name, self[name]) for name in _SPECS]

    def __getitem__(self, key: str) -> Any:
        """A key's value by its flat name (config["layerwise_load"])."""
        if key not in _SPECS:
            raise KeyError(key)
        section = _SECTION_OF_KEY.get(key)
        return getattr(getattr(self, section) if section else self, key)

    def replace(self, **changes: Any) -> "Config":
        """A copy with some keys changed (flat names, checked like every source)."""
        return Config(**{**dict(self.items()), **_check_keys(changes, "replace()")})

    def runtime_options(self) -> dict[str, Any]:
        """The native runtime's keys and their values, for lmcache._core.Runtime(**options)."""
        return {name: getattr(self, name) for name in RUNTIME_KEYS}

    @classmethod
    def keys(cls) -> list[str]:
        """Every key's flat name."""
        return list(_SPECS)

    @classmethod
    def describe(cls) -> str:
        """Every key by section: name, type, default, what is allowed, and doc."""
        lines = []
        for section in SECTIONS:
            lines.append(f"{section}:")
            for f in _SPECS.values():
                if f.metadata["section"] != section:
                    continue
                m = f.metadata
                allowed = ""
                if m["choices"] is not None:
                    allowed = ", one of " + ", ".join(map(repr, m["choices"]))
                elif m["minimum"] is not None and m["maximum"] is not None:
                    allowed = f", {m['minimum']} to {m['maximum']}"
                elif m["minimum"] is not None:
                    allowed = f", at least {m['minimum']}"
                default = "(hidden)" if m["secret"] and f.default else repr(f.default)
                lines.append(f"  {f.name} ({f.type}, default {default}{allowed}): {m['doc']}")
        return "\n".join(lines)


def _keys_of(section: type) -> list[str]:
    return [f.name for f in dataclasses.fields(section)]


# Every key by flat name -> its dataclasses.Field (type, default, metadata);
# which section object holds a section's key.
_SECTION_FIELDS = {s.NAME: s for s in _SECTION_TYPES}
_SPECS: dict[str, dataclasses.Field] = {}
_SECTION_OF_KEY: dict[str, str] = {}
for _f in dataclasses.fields(Config):
    if _f.name in _SECTION_FIELDS:
        for _g in dataclasses.fields(_SECTION_FIELDS[_f.name]):
            assert _g.name not in _SPECS, f"config key {_g.name!r} is declared twice"
            _SPECS[_g.name], _SECTION_OF_KEY[_g.name] = _g, _f.name
    else:
        assert _f.name not in _SPECS
        _SPECS[_f.name] = _f
assert all(f.metadata["section"] in SECTIONS for f in _SPECS.values())


def _check_keys(values: dict[str, Any], source: str, *, lenient: bool = False) -> dict[str, Any]:
    """`values` with flat keys only, each a known key. A section may also be
    given whole as a mapping of its own keys (vllm: {layerwise_load: on}).
    lenient (an LMCache file): an unknown key is warned about and dropped."""
    allowed = set(Config.keys())
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if lenient and key not in allowed and key not in _SECTION_FIELDS:
            logger.warning("ignoring key %r of %s: neither lmcache nor LMCache's keys lmcache maps", key, source)
            continue
        section = _SECTION_FIELDS.get(key)
        if section is not None and isinstance(value, Mapping):
            mine = set(_keys_of(section))
            for inner in value:
                if inner not in mine:
                    raise ConfigError(f"unknown config key {inner!r} in section {key!r} of {source}; allowed keys: "
                                      f"{', '.join(sorted(mine))}")
            flat.update(value)
        elif key not in allowed:
            raise ConfigError(f"unknown config key {key!r} in {source}; allowed keys: {', '.join(sorted(allowed))}")
        else:
            flat[key] = value
    return flat


def _read_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path!r}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path!r} is not valid YAML: {e}") from None
    except Exception as e:  # noqa: BLE001 - YAML's constructors raise what they like on tagged values
        # (`!!float 1e1,b` a ValueError, `!!float _` an IndexError, deep nesting a RecursionError).
        raise ConfigError(f"config file {path!r} is not valid YAML: {type(e).__name__}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of keys to values")
    from lmcache import lmcache_compat

    lenient = lmcache_compat.is_lmcache_file(data)
    source = f"config file {path!r}"
    return _check_keys(lmcache_compat.translate(data, source) if lenient else data, source, lenient=lenient)


_warned_env: set[str] = set()


def _read_env(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The config keys the environment sets, and each one's variable name.
    LMCache's variables (LMCACHE_LOCAL_CPU, LMCACHE_MAX_LOCAL_CPU_SIZE, ...)
    count under the lmcache key they map to."""
    from lmcache import lmcache_compat

    values: dict[str, Any] = {}
    names: dict[str, str] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG_FILE:
            continue
        key = name[len(ENV_PREFIX):].lower()
        for mapped, value in lmcache_compat.translate({key: raw}, f"environment variable {name}").items():
            if mapped in Config.keys():
                values[mapped], names[mapped] = value, name
            elif name not in _warned_env:
                # Other software shares the prefix: an unrelated variable is
                # named once in a warning, never a reason not to start.
                _warned_env.add(name)
                logger.warning("ignoring environment variable %s: not an lmcache config key (see "
                               "lmcache.Config.describe())", name)
    return values, names


def redact_url(url: str) -> str:
    """The URL without its password (see lmcache.remote.redis_tier.redact)."""
    from lmcache.remote.redis_tier import redact

    return redact(url)


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """Converts `value` (maybe a string from the environment) to the field's type and checks it."""
    name, kind = f.name, f.type
    try:
        if kind == "bool":
            if isinstance(value, bool):
                out: Any = value
            elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                out = value.strip().lower() in _TRUE
            else:
                raise ValueError
        elif kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            out = int(value)
        elif kind == "float":
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
            if not math.isfinite(out):
                raise ValueError
        else:
            choices = f.metadata["choices"] or ()
            if isinstance(value, bool) and "on" in choices and "off" in choices:
                value = "on" if value else "off"  # YAML 1.1 reads a bare on/off as a bool
            if not isinstance(value, str):
                raise ValueError
            out = value
    except (TypeError, ValueError, OverflowError):
        allowed = {"bool": "true or false", "int": "an integer", "float": "a finite number",
                   "str": "a string"}[kind]
        shown = "(hidden)" if f.metadata["secret"] else repr(value)
        raise ConfigError(f"config key {name!r}: {shown} is not {allowed}") from None
    minimum, maximum = f.metadata["minimum"], f.metadata["maximum"]
    if minimum is not None and out < minimum:
        raise ConfigError(f"config key {name!r}: {out!r} is below the minimum {minimum}")
    if maximum is not None and out > maximum:
        raise ConfigError(f"config key {name!r}: {out!r} is above the maximum {maximum}")
    choices = f.metadata["choices"]
    if choices is not None and out not in choices:
        raise ConfigError(f"config key {name!r}: {out!r} is not one of {', '.join(map(repr, choices))}")
    return out
