"""LMCache's configuration names, read as lmcache's own.

People arrive with an LMCache YAML file (``LMCACHE_CONFIG_FILE``) or its
``LMCACHE_*`` environment variables from a quickstart or vLLM's docs. Each
key below maps to lmcache's key (and, where the meaning differs, its value is
converted); a key with no equivalent is named once in a warning and ignored,
never a reason not to start.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

logger = logging.getLogger(__name__)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _local_disk(value: Any) -> str:
    # LMCache writes "file:///path/to/dir/"; a bare path is accepted too.
    text = str(value or "").strip()
    if text.lower().startswith("file://"):
        text = text[len("file://"):]
    return text


def _layerwise(value: Any) -> str:
    return "on" if _bool(value) else "off"


def _first_number(value: Any) -> Any:
    # LMCache gives blend_recompute_ratios / blend_check_layers as lists.
    if isinstance(value, str) and "," in value:
        value = value.split(",")
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def _eviction(value: Any) -> str:
    return str(value).strip().lower()


def _serde(value: Any) -> Optional[str]:
    # "naive" is raw bytes; "cachegen" (LMCache's lossy codec) has no equivalent here.
    return {"naive": "none", "kivi": None, "cachegen": None}.get(str(value).strip().lower(), None)


def _remote_url(value: Any) -> Optional[str]:
    # lmcache speaks Redis/Valkey; LMCache's own server ("lm://") and its
    # other connectors have no equivalent. Any other URL goes on to lmcache's
    # own check (which names what is allowed).
    text = str(value or "").strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    return None if scheme in _LMCACHE_ONLY_SCHEMES else text


_LMCACHE_ONLY_SCHEMES = {"lm", "mooncakestore", "infinistore", "blackhole", "nixl", "s3", "fs", "external",
                         "sagemaker-hyperpod", "weka", "3fs", "gds"}


# LMCache key -> (lmcache key, conversion). A conversion returning None means
# the value has no equivalent (warned about like an unmapped key).
_MAPPED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "max_local_cpu_size": ("l1_capacity_gb", float),
    "local_disk": ("local_disk_path", _local_disk),
    "max_local_disk_size": ("disk_capacity_gb", float),
    "remote_url": ("remote_url", _remote_url),
    "remote_serde": ("remote_codec", _serde),
    "use_layerwise": ("layerwise_load", _layerwise),
    "blend_special_str": ("blend_separator", str),
    "blend_recompute_ratios": ("blend_recompute_share", _first_number),
    "blend_check_layers": ("blend_check_layer", _first_number),
    "cache_policy": ("eviction_policy", _eviction),
    "internal_api_server_port_start": ("control_port", int),
}

# LMCache keys that need no counterpart: what they ask for is what lmcache
# does anyway.
_IMPLIED = {
    # lmcache always keeps a host-memory tier (it is the staging area of the
    # disk and remote tiers too); its size is max_local_cpu_size.
    "local_cpu": lambda v: _bool(v) or _note("local_cpu: false", "lmcache always keeps a host-memory tier "
                                                                 "(max_local_cpu_size sizes it)"),
    "lmcache_instance_id": lambda v: True,
    "internal_api_server_enabled": lambda v: True,  # control_port (internal_api_server_port_start) decides
}

# Why a value of a mapped key has no equivalent.
_NO_VALUE = {
    "remote_url": "lmcache's shared tier is a Redis or Valkey server (redis://, rediss://, valkey://), not "
                  "LMCache's own server or its other connectors",
    "remote_serde": "lmcache's remote codecs are none, zstd, lz4 and fp8 (remote_codec); LMCache's lossy "
                    "serializers have no counterpart",
}

_warned: set[str] = set()


def _note(key: str, why: str) -> bool:
    if key not in _warned:
        _warned.add(key)
        logger.warning("LMCache setting %s has no equivalent in lmcache and is ignored: %s", key, why)
    return True


# LMCache keys people set that lmcache has no counterpart for: warned about
# by name, never fatal.
_KNOWN_UNSUPPORTED = {
    "save_decode_cache": "lmcache stores the prompt's whole chunks, not tokens generated in decode",
    "enable_p2p": "peer-to-peer sharing is not supported; use a shared remote_url",
    "enable_pd": "disaggregated prefill is not supported",
    "pd_role": "disaggregated prefill is not supported",
    "enable_controller": "the LMCache controller is not supported; see the control API (control_port)",
    "use_gds": "GPU Direct Storage is not supported",
    "gds_path": "GPU Direct Storage is not supported",
    "numa_mode": "NUMA placement is left to the operating system",
    "save_unfull_chunk": "lmcache stores whole chunks only",
    "pre_caching_hash_algorithm": "lmcache's keys are XXH3-128 chains (key_scheme)",
    "extra_config": "LMCache's extra_config has no meaning here",
    "remote_storage_plugins": "remote storage plugins are not supported",
    "external_lookup_client": "external lookup clients are not supported",
}


def is_lmcache_file(values: dict[str, Any]) -> bool:
    """Whether a YAML file's keys are LMCache's (then keys neither side
    knows are warned about, not refused: LMCache has many more)."""
    return any(key in _MAPPED or key in _IMPLIED or key in _KNOWN_UNSUPPORTED for key in values)


def translate(values: dict[str, Any], source: str) -> dict[str, Any]:
    """`values` with LMCache's names replaced by lmcache's (lmcache's own names
    pass through untouched, to be checked by the caller; chunk_size and
    enable_blending mean the same on both sides)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in _MAPPED:
            target, convert = _MAPPED[key]
            try:
                converted = convert(value)
            except (TypeError, ValueError):
                converted = value  # the target key's own check names the bad value
            if converted is None:
                # (a URL is never echoed: it may hold a password)
                shown = key if key == "remote_url" else f"{key}={value!r}"
                _note(shown, f"{_NO_VALUE.get(key, 'no equivalent value')} (in {source})")
                continue
            out[target] = converted
        elif key in _IMPLIED:
            _IMPLIED[key](value)
        elif key in _KNOWN_UNSUPPORTED:
            _note(key, f"{_KNOWN_UNSUPPORTED[key]} (in {source})")
        else:
            out[key] = value
    return out
