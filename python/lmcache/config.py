"""One typed, frozen configuration for lmcache.

Sources, later ones winning: the defaults below, a YAML file (``path`` or the
``LMCACHE_CONFIG_FILE`` environment variable), ``LMCACHE_<KEY>`` environment
variables, and a dict of overrides (an engine's extra-config). Every key is a
field name; unknown keys and bad values raise :class:`ConfigError` naming the
key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from lmcache.errors import ConfigError

logger = logging.getLogger(__name__)

ENV_PREFIX = "LMCACHE_"
ENV_CONFIG_FILE = "LMCACHE_CONFIG_FILE"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _field(default: Any, doc: str, *, minimum: Optional[float] = None, maximum: Optional[float] = None,
           choices: Optional[tuple] = None, secret: bool = False):
    # A secret field is never shown: repr() leaves it out (see Config.__repr__).
    return field(default=default, repr=not secret,
                 metadata={"doc": doc, "minimum": minimum, "maximum": maximum, "choices": choices, "secret": secret})


_MAX_SECONDS = 24 * 3600.0  # a timeout beyond a day is a mistake, not a wish
_MAX_GB = float(1 << 20)    # 1 PiB


@dataclass(frozen=True)
class Config:
    chunk_size: int = _field(256, "Tokens per stored chunk.", minimum=1, maximum=1 << 20)
    l1_capacity_gb: float = _field(2.0, "Size of the host-memory tier (L1) in GiB.", minimum=0.0, maximum=_MAX_GB)
    num_copy_threads: int = _field(0, "Threads for CPU copies; 0 means one per CPU.", minimum=0, maximum=1024)
    eviction_policy: str = _field("lru", "How L1 chooses what to evict.", choices=("lru",))
    model_id: str = _field("", "Model name in every key; engines fill it in when empty.")
    tenant_salt: str = _field("", "Isolates tenants: different salts never share entries.")
    verify_l1_checksums: bool = _field(False, "Verify the payload checksum on every L1 load (slower).")
    local_disk_path: str = _field("", "Directory of the local disk tier (L2); empty: no disk tier.")
    disk_capacity_gb: float = _field(16.0, "Size limit of the disk tier in GiB (least recently used records go first).",
                                     minimum=0.0, maximum=_MAX_GB)
    disk_io_backend: str = _field("auto", "Disk I/O: auto (io_uring when usable, else threads) or threads.",
                                  choices=("auto", "threads"))
    disk_queue_depth: int = _field(32, "I/O operations in flight on the disk tier.", minimum=1, maximum=4096)
    write_behind_chunks: int = _field(64, "L1-to-disk writes queued; more are dropped (and counted).", minimum=1,
                                      maximum=1 << 20)
    disk_lock_timeout_s: float = _field(10.0, "How long to wait for another process to release the disk directory.",
                                        minimum=0.0, maximum=_MAX_SECONDS)
    remote_url: str = _field("", "Shared remote tier (L3): redis://, rediss://, redis+cluster://h1:p1,h2:p2 "
                             "(password in the URL is never logged); empty: none.")
    remote_timeout_s: float = _field(1.0, "Timeout of every remote operation; a timeout is a miss.", minimum=0.001,
                                     maximum=_MAX_SECONDS)
    remote_codec: str = _field("none", "Value codec on the remote tier: none, zstd, lz4 (lossless) or fp8 (lossy).",
                               choices=("none", "zstd", "lz4", "fp8"))
    remote_queue_chunks: int = _field(64, "Chunks queued for the remote tier; more are dropped (and counted).",
                                      minimum=1, maximum=1 << 20)
    remote_tls_ca_file: str = _field("", "rediss://: CA bundle that the server's certificate must chain to "
                                     "(empty: the system's); the host name is always checked.")
    remote_tls_cert_file: str = _field("", "rediss://: client certificate (PEM) for servers that require one.")
    remote_tls_key_file: str = _field("", "rediss://: private key (PEM) of the client certificate.")
    auth_secret: str = _field("", "Secret that authenticates (MAC) every record on disk and on the remote tier; "
                              "needed with remote_url. Never logged or shown. Prefer auth_secret_file or the "
                              "LMCACHE_AUTH_SECRET environment variable.", secret=True)
    auth_secret_file: str = _field("", "File holding auth_secret (read once at start; must not be readable by "
                                   "group or others).")
    encrypt_records: bool = _field(False, "Also encrypt records (AES-256-GCM) on disk and on the remote tier.")
    key_scheme: str = _field("lmcache", "How chunks are named: lmcache (XXH3 chain, native) or sglang (SGLang's "
                             "page hashes, with chunk_size = SGLang's page size: chunks shareable with SGLang).",
                             choices=("lmcache", "sglang"))
    lookup_timeout_s: float = _field(5.0, "vLLM: scheduler-to-worker lookup timeout; a timeout is a miss.", minimum=0.001,
                                     maximum=_MAX_SECONDS)
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
    fault_load_rate: float = _field(0.0, "Testing: share of loads made to fail (chunk corrupted or dropped).", minimum=0.0,
                                    maximum=1.0)
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

    def __repr__(self) -> str:
        # Secrets are left out; a password inside a URL is masked.
        shown = []
        for f in dataclasses.fields(self):
            if f.metadata["secret"]:
                continue
            value = getattr(self, f.name)
            if f.name == "remote_url" and value:
                value = redact_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"Config({', '.join(shown)})"

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
    except Exception as e:  # noqa: BLE001 - YAML's constructors raise what they like on tagged values
        # (`!!float 1e1,b` a ValueError, `!!float _` an IndexError, deep nesting a RecursionError).
        raise ConfigError(f"config file {path!r} is not valid YAML: {type(e).__name__}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of keys to values")
    return _check_keys(data, f"config file {path!r}")


_warned_env: set[str] = set()


def _read_env(env: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG_FILE:
            continue
        key = name[len(ENV_PREFIX):].lower()
        if key not in Config.keys():
            # Other software shares the prefix: an unrelated variable is named
            # once in a warning, never a reason not to start.
            if name not in _warned_env:
                _warned_env.add(name)
                logger.warning("ignoring environment variable %s: not an lmcache config key (see "
                               "lmcache.Config.describe())", name)
            continue
        values[key] = raw
    return values


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
