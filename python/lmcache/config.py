"""One typed, frozen configuration for lmcache.

Sources, later ones winning: the defaults, a YAML file (``path`` or the
``LMCACHE_CONFIG_FILE`` environment variable), ``LMCACHE_<KEY>`` environment
variables, and a dict of overrides (an engine's extra-config). Every key is a
field name; unknown keys and bad values raise :class:`ConfigError` naming the
key and what is allowed.

The native keys (the runtime's, the remote tier's and the secret's: their
defaults, limits, choices and docs) come from the native table, the one the
C API reads too; the keys that only the Python adapters read are declared
below.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import field
from typing import Any, Mapping, Optional

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
_NATIVE_TABLE = _core.option_table()
# What Runtime(**options) takes; the table's remote and security keys are
# read around the runtime (lmcache.remote, lmcache.record_key).
RUNTIME_KEYS = tuple(row["name"] for row in _NATIVE_TABLE if row["section"] == "runtime")

_MAX_SECONDS = 24 * 3600.0  # a timeout beyond a day is a mistake, not a wish (as in the native table)

# Keys that only the Python adapters read (the vLLM connector, fault
# injection): declared here. The remote tier's and the secret's keys are in
# the native table, since the C API reads them too.
_PYTHON_FIELDS = [
    ("lookup_timeout_s", "float", _field(
        5.0, "vLLM: scheduler-to-worker lookup timeout; a timeout is a miss.", section="vllm", minimum=0.001,
        maximum=_MAX_SECONDS)),
    ("load_failure_policy", "str", _field(
        "recompute", "vLLM: what a load that fails after a hit becomes.", section="vllm",
        choices=("recompute", "fail"))),
    ("layerwise_load", "str", _field(
        "auto", "vLLM: load layer by layer, each layer waited for just before its attention (on a GPU the copy of "
        "layer i+1 overlaps the compute of layer i): auto (on for GPU caches when lmcache has CUDA), on, off "
        "(one load before the forward pass).", section="vllm", choices=("auto", "on", "off"))),
    ("async_store", "str", _field(
        "auto", "vLLM: begin stores after the forward pass and publish them from a thread of lmcache's, so the "
        "engine's thread never waits for a store copy: auto (on for GPU caches when lmcache has CUDA), on, off.",
        section="vllm", choices=("auto", "on", "off"))),
    ("fault_load_rate", "float", _field(
        0.0, "Testing: share of loads made to fail (chunk corrupted or dropped).", section="testing", minimum=0.0,
        maximum=1.0)),
    ("fault_seed", "int", _field(0, "Testing: seed of the fault injector.", section="testing")),
    ("fault_load_max", "int", _field(0, "Testing: faults injected at most (0: no limit).", section="testing",
                                     minimum=0)),
]

SECTIONS = ("runtime", "remote", "security", "vllm", "testing")


def _native_fields() -> list:
    return [(row["name"], row["type"], _field(row["default"], row["doc"], section=row["section"],
                                              minimum=row["minimum"], maximum=row["maximum"], choices=row["choices"],
                                              secret=row["secret"]))
            for row in _NATIVE_TABLE]


class _ConfigMethods:
    """Config's behaviour; its fields are made from the two lists above."""

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

    def runtime_options(self) -> dict[str, Any]:
        """The native runtime's keys and their values, for lmcache._core.Runtime(**options)."""
        return {name: getattr(self, name) for name in RUNTIME_KEYS}

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def describe(cls) -> str:
        """Every key by section: name, type, default, what is allowed, and doc."""
        lines = []
        for section in SECTIONS:
            lines.append(f"{section}:")
            for f in dataclasses.fields(cls):
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


def _make_config_class() -> type:
    fields = _native_fields() + _PYTHON_FIELDS
    names = [name for name, _, _ in fields]
    assert len(names) == len(set(names)), "a Python key repeats a native key"
    assert all(f.metadata["section"] in SECTIONS for _, _, f in fields)
    # repr=False: _ConfigMethods.__repr__ hides secrets; frozen: a config never changes once made.
    cls = dataclasses.make_dataclass("Config", fields, bases=(_ConfigMethods,), frozen=True, repr=False)
    cls.__module__ = __name__
    cls.__doc__ = "lmcache's configuration: one frozen, typed value per key (Config.describe() lists them)."
    return cls


Config = _make_config_class()


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
