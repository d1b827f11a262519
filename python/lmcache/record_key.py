"""The key that authenticates records leaving the process.

The user gives a secret (config ``auth_secret``, the ``LMCACHE_AUTH_SECRET``
environment variable, or a file named by ``auth_secret_file``); lmcache
derives from it the 32-byte key of AES-256-GCM with which every record
written to disk or to the remote tier is sealed, and checked when it comes
back. Engines that share a remote store share the secret; nobody without it
can write a record they accept. The secret is never logged or shown.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from typing import Optional

from lmcache.config import Config
from lmcache.errors import ConfigError

_LABEL = b"lmcache record key v1"


def derive_record_key(secret: bytes) -> bytes:
    """32 key bytes from a secret of any length (HMAC-SHA256 under a fixed label)."""
    return hmac.new(secret, _LABEL, hashlib.sha256).digest()


def record_key(config: Config) -> Optional[bytes]:
    """The derived key, or None when no secret is configured."""
    secret = _secret(config)
    if secret is None:
        if config.remote_url:
            raise ConfigError(
                "config key 'remote_url': a shared remote tier needs a secret that authenticates its records: set "
                "auth_secret_file (or LMCACHE_AUTH_SECRET) to the same secret on every engine that shares it, e.g. "
                "one made by `python -c \"import secrets; print(secrets.token_hex(32))\"`")
        if config.encrypt_records and not config.local_disk_path:
            raise ConfigError("config key 'encrypt_records': nothing leaves the process without a disk or remote tier")
        return None
    return derive_record_key(secret)


def _secret(config: Config) -> Optional[bytes]:
    if config.auth_secret and config.auth_secret_file:
        raise ConfigError("config keys 'auth_secret' and 'auth_secret_file': give one, not both")
    if config.auth_secret:
        secret = config.auth_secret.encode()
    elif config.auth_secret_file:
        secret = _read_secret_file(config.auth_secret_file)
    else:
        return None
    if len(secret) < 16:
        raise ConfigError("config key 'auth_secret': a secret needs at least 16 bytes")
    return secret


def _read_secret_file(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"config key 'auth_secret_file': cannot open {path!r}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"config key 'auth_secret_file': {path!r} is not a regular file")
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise ConfigError(f"config key 'auth_secret_file': {path!r} must belong to this user and be unreadable "
                              "by group and others (chmod 600)")
        if st.st_size > 4096:
            raise ConfigError(f"config key 'auth_secret_file': {path!r} is larger than 4096 bytes")
        data = os.read(fd, 4097)
    finally:
        os.close(fd)
    return data.strip()
