"""One typed, frozen configuration for lmcache.

Sources, later ones winning: the defaults below, a YAML file (``path`` or the
``LMCACHE_CONFIG_FILE`` environment variable), ``LMCACHE_<KEY>`` environment
variables, and a dict of overrides (an engine's extra-config). Every key is a
field name; unknown keys and bad values raise :class:`ConfigError` naming the
key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from lmcache.errors import ConfigError

ENV_PREFIX = "LMCACHE_"
ENV_CONFIG_FILE = "LMCACHE_CONFIG_FILE"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _field(default: Any, doc: str, *, minimum: Optional[float] = None, choices: Optional[tuple] = None):
    return field(default=default, metadata={"doc": doc, "minimum": minimum, "choices": choices})


@dataclass(frozen=True)
class Config:
    chunk_size: int = _field(256, "Tokens per stored chunk.", minimum=1)
    l1_capacity_gb: float = _field(2.0, "Size of the host-memory tier (L1) in GiB.", minimum=0.0)
    num_copy_threads: int = _field(0, "Threads for CPU copies; 0 means one per CPU.", minimum=0)
    eviction_policy: str = _field("lru", "How L1 chooses what to evict.", choices=("lru",))
    model_id: str = _field("", "Model name in every key; engines fill it in when empty.")
    tenant_salt: str = _field("", "Isolates tenants: different salts never share entries.")
    verify_l1_checksums: bool = _field(False, "Verify the payload checksum on every L1 load (slower).")
    local_disk_path: str = _field("", "Directory of the local disk tier (L2); empty: no disk tier.")
    disk_capacity_gb: float = _field(16.0, "Size limit of the disk tier in GiB (least recently used records go first).",
                                     minimum=0.0)
    disk_io_backend: str = _field("auto", "Disk I/O: auto (io_uring when usable, else threads) or threads.",
                                  choices=("auto", "threads"))
    disk_queue_depth: int = _field(32, "I/O operations in flight on the disk tier.", minimum=1)
    write_behind_chunks: int = _field(64, "L1-to-disk writes queued; more are dropped (and counted).", minimum=1)
    disk_lock_timeout_s: float = _field(10.0, "How long to wait for another process to release the disk directory.",
                                        minimum=0.0)
    remote_url: str = _field("", "Shared remote tier (L3): redis://, rediss://, redis+cluster://h1:p1,h2:p2 "
                             "(password in the URL is never logged); empty: none.")
    remote_timeout_s: float = _field(1.0, "Timeout of every remote operation; a timeout is a miss.", minimum=0.001)
    remote_codec: str = _field("none", "Value codec on the remote tier: none, zstd, lz4 (lossless) or fp8 (lossy).",
                               choices=("none", "zstd", "lz4", "fp8"))
    remote_queue_chunks: int = _field(64, "Chunks queued for the remote tier; more are dropped (and counted).",
                                      minimum=1)
    key_scheme: str = _field("lmcache", "How chunks are named: lmcache (XXH3 chain, native) or sglang (SGLang's "
                             "page hashes, with chunk_size = SGLang's page size: chunks shareable with SGLang).",
                             choices=("lmcache", "sglang"))
    lookup_timeout_s: float = _field(5.0, "vLLM: scheduler-to-worker lookup timeout; a timeout is a miss.", minimum=0.001)
    load_failure_policy: str = _field(
        "recompute", "vLLM: what a load that fails after a hit becomes.", choices=("recompute", "fail")
    )
    layerwise_load: str = _field(
        "auto", "vLLM: load layer by layer, each layer waited for just before its attention (on a GPU the copy of "
        "layer i+1 overlaps the compute of layer i): auto (on for GPU caches when lmcache has CUDA), on, off "
        "(one load before the forward pass).", choices=("auto", "on", "off"))
    async_store: str = _field(
        "auto", "vLLM: begin stores after the forward pass and publish them from a thread of lmcache's, so the "
        "engine's thread never waits for a store copy: auto (on for GPU caches when lmcache has CUDA), on, off.",
        choices=("auto", "on", "off"))
    fault_load_rate: float = _field(0.0, "Testing: share of loads made to fail (chunk corrupted or dropped).", minimum=0.0)
    fault_seed: int = _field(0, "Testing: seed of the fault injector.")
    fault_load_max: int = _field(0, "Testing: faults injected at most (0: no limit).", minimum=0)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f, getattr(self, f.name)))

    # ------------------------------------------------------------------ sources
    @classmethod
    def load(
        cls,
        path: Optional[str] = None,
        *,
        env: Optional[Mapping[str, str]] = None,
        overrides: Optional[Mapping[str, Any]] = None,
    ) -> "Config":
        """Builds a config from defaults < YAML file < environment < overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = path or env.get(ENV_CONFIG_FILE)
        if path:
            values.update(_read_yaml(path))
        values.update(_read_env(env))
        if overrides:
            values.update(_check_keys(dict(overrides), "overrides"))
        return cls(**values)

    def replace(self, **changes: Any) -> "Config":
        _check_keys(changes, "replace()")
        return dataclasses.replace(self, **changes)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def describe(cls) -> str:
        """One line per key: name, type, default and doc."""
        lines = []
        for f in dataclasses.fields(cls):
            lines.append(f"{f.name} ({f.type}, default {f.default!r}): {f.metadata['doc']}")
        return "\n".join(lines)


def _check_keys(values: dict[str, Any], source: str) -> dict[str, Any]:
    allowed = set(Config.keys())
    for key in values:
        if key not in allowed:
            raise ConfigError(f"unknown config key {key!r} in {source}; allowed keys: {', '.join(sorted(allowed))}")
    return values


def _read_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path!r}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path!r} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of keys to values")
    return _check_keys(data, f"config file {path!r}")


def _read_env(env: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG_FILE:
            continue
        key = name[len(ENV_PREFIX):].lower()
        if key not in Config.keys():
            raise ConfigError(
                f"unknown environment variable {name}; allowed: "
                + ", ".join(ENV_PREFIX + k.upper() for k in Config.keys())
                + f", {ENV_CONFIG_FILE}"
            )
        values[key] = raw
    return values


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
        else:
            if not isinstance(value, str):
                raise ValueError
            out = value
    except (TypeError, ValueError):
        allowed = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}[kind]
        raise ConfigError(f"config key {name!r}: {value!r} is not {allowed}") from None
    minimum = f.metadata["minimum"]
    if minimum is not None and out < minimum:
        raise ConfigError(f"config key {name!r}: {out!r} is below the minimum {minimum}")
    choices = f.metadata["choices"]
    if choices is not None and out not in choices:
        raise ConfigError(f"config key {name!r}: {out!r} is not one of {', '.join(map(repr, choices))}")
    return out
