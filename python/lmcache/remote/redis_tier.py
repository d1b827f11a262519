"""Redis / Valkey remote tier on redis-py (hiredis parser when installed).

One URL configures it:
    redis://[[user]:password@]host:port[/db]  a single server
    rediss://...                              TLS
    redis+cluster://[:pw@]h1:p1,h2:p2,...     Redis Cluster from seed nodes
    (rediss+cluster:// for TLS; a plain redis:// URL with several hosts is a cluster too)
With TLS the server's certificate is always verified, host name included,
against the CA bundle given (RemoteTls.ca_file) or the system's; a client
certificate and key may be given for servers that ask for one.
Batches go through one pipeline (one round trip); every socket operation has
a timeout; the connection pool reconnects by itself after a server restart.
"""

from __future__ import annotations

import logging
import os
import re
from typing import NamedTuple, Optional, Sequence
from urllib.parse import unquote

from lmcache.errors import ConfigError
from lmcache.remote.base import RemoteTier, RemoteTls, RemoteUnavailable

logger = logging.getLogger(__name__)

KEY_PREFIX = "lmcache:"
_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")


class _Url(NamedTuple):
    scheme: str
    userinfo: Optional[str]  # None without an '@'
    hosts: str
    path: str
    extra: bool  # a query or fragment followed the hosts


_HOST = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._\-]+)(:[0-9]+)?"  # name or [IPv6], optional port
_HOSTS = re.compile(_HOST + "(," + _HOST + ")*")
_PATH = re.compile(r"(/\d*)?")  # an optional database number


def _split(url: str) -> _Url:
    """Splits a URL by hand: urlsplit() ends the authority at the first '/', '?'
    or '#', which a password may hold. The user part ends at the LAST '@' (host
    names, ports and database numbers never hold one)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _Url("", None, "", "", False)
    userinfo, at, after = rest.rpartition("@")
    tail = re.split(r"[?#]", after, maxsplit=1)
    hosts, slash, path = tail[0].partition("/")
    return _Url(scheme.lower(), userinfo if at else None, hosts, slash + path, len(tail) > 1)


def _well_formed(u: _Url) -> bool:
    return bool(u.scheme and _HOSTS.fullmatch(u.hosts) and _PATH.fullmatch(u.path))


def redact(url: str) -> str:
    """The URL without its password (for logs and errors): 'user:***@' keeps the
    user name; a user part without ':' is hidden whole (a password may have been
    put there). Any query or fragment is left out, and a URL that does not parse
    shows nothing but its scheme (what follows might be part of a password)."""
    u = _split(url)
    if not _well_formed(u):
        return f"{u.scheme}://***" if u.scheme else "***"
    if u.userinfo is None:
        return f"{u.scheme}://{u.hosts}{u.path}"
    user, colon, _ = u.userinfo.partition(":")
    shown = f"{user}:***" if colon and re.fullmatch(r"[\w.\-]*", user) else "***"
    return f"{u.scheme}://{shown}@{u.hosts}{u.path}"


class RedisTier(RemoteTier):
    def __init__(self, url: str, *, timeout_s: float, tls: RemoteTls = RemoteTls()) -> None:
        from redis.exceptions import RedisError

        self._errors = (RedisError, OSError)
        self.display_name = redact(url)
        self._url, self._timeout, self._tls = url, timeout_s, tls
        self._client = None
        self._factory_error = ""
        self._common = _client_options(_split(url), timeout_s, tls)
        self._connect()

    def _connect(self) -> None:
        import redis

        u = _split(self._url)
        hosts = u.hosts.split(",")
        try:
            if "cluster" in u.scheme or len(hosts) > 1:
                from redis.cluster import ClusterNode, RedisCluster

                nodes = [ClusterNode(*_host_port(h)) for h in hosts]
                self._client = RedisCluster(startup_nodes=nodes, **self._common)
                self.cluster = True
            else:
                host, port = _host_port(hosts[0])
                self._client = redis.Redis(host=host, port=port, db=_db(u.path), **self._common)
                self.cluster = False
        except self._errors as e:
            # A cluster client asks its seeds at start; an unreachable cluster is a
            # miss for now, and we try again on the next call.
            self._client = None
            self._factory_error = _describe(e)
            logger.warning("lmcache remote tier %s unavailable at start: %s", self.display_name, self._factory_error)

    # ----------------------------------------------------------------- helpers
    def _conn(self):
        if self._client is None:
            # Only the cluster client can fail at construction; retry it.
            self._connect()
            if self._client is None:
                raise RemoteUnavailable(f"{self.display_name}: {self._factory_error}")
        return self._client

    def _pipeline_run(self, build) -> list:
        try:
            pipe = self._conn().pipeline(transaction=False)
            build(pipe)
            return pipe.execute()
        except self._errors as e:
            raise RemoteUnavailable(f"{self.display_name}: {_describe(e)}") from None

    # ----------------------------------------------------------------- API
    def exists(self, keys: Sequence[str]) -> list[bool]:
        if not keys:
            return []
        out = self._pipeline_run(lambda p: [p.exists(KEY_PREFIX + k) for k in keys])
        return [bool(x) for x in out]

    def get(self, keys: Sequence[str]) -> list[Optional[bytes]]:
        if not keys:
            return []
        return list(self._pipeline_run(lambda p: [p.get(KEY_PREFIX + k) for k in keys]))

    def put(self, items: Sequence[tuple[str, bytes]]) -> None:
        if items:
            self._pipeline_run(lambda p: [p.set(KEY_PREFIX + k, v) for k, v in items])

    def delete(self, keys: Sequence[str]) -> None:
        if keys:
            self._pipeline_run(lambda p: [p.delete(KEY_PREFIX + k) for k in keys])

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except self._errors:
                pass


def _client_options(u: _Url, timeout_s: float, tls: RemoteTls) -> dict:
    """redis-py keyword arguments common to the single-server and cluster clients."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    if u.scheme not in _SCHEMES:
        raise ConfigError(f"config key 'remote_url': unsupported scheme {u.scheme!r} (allowed: {', '.join(_SCHEMES)})")
    if not _well_formed(u) or u.extra:  # the message does not echo the URL: it may hold a password
        raise ConfigError("config key 'remote_url': expected scheme://[[user]:password@]host:port[,host:port...]"
                          "[/db], without query options")
    username = password = None
    if u.userinfo is not None:
        user, _, pw = u.userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) or None
    # No client-side retries: a slow or absent server must cost one timeout
    # (a miss), not several; the next call simply tries again.
    common = dict(password=password, username=username, socket_timeout=timeout_s,
                  socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
    if u.scheme.startswith("rediss"):
        common.update(ssl=True, ssl_cert_reqs="required", ssl_check_hostname=True, **_tls_files(tls))
    elif tls.any():
        raise ConfigError("config keys 'remote_tls_*' need a TLS URL (rediss:// or rediss+cluster://)")
    return common


def _tls_files(tls: RemoteTls) -> dict:
    """The TLS file options, each checked to be a readable file now (not at the first request)."""
    files = {"remote_tls_ca_file": ("ssl_ca_certs", tls.ca_file),
             "remote_tls_cert_file": ("ssl_certfile", tls.cert_file),
             "remote_tls_key_file": ("ssl_keyfile", tls.key_file)}
    out = {}
    for config_key, (option, path) in files.items():
        if not path:
            continue
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise ConfigError(f"config key {config_key!r}: {path!r} is not a readable file")
        out[option] = path
    if tls.key_file and not tls.cert_file:
        raise ConfigError("config key 'remote_tls_key_file' needs 'remote_tls_cert_file'")
    return out


def _host_port(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    if not host:
        host, port = hostport, "6379"
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ConfigError(f"config key 'remote_url': bad port in {hostport!r}") from None


def _db(path: str) -> int:
    try:
        return int(path.lstrip("/") or 0)
    except ValueError:
        raise ConfigError(f"config key 'remote_url': bad database number {path.lstrip('/')!r}") from None


def _describe(e: Exception) -> str:
    # redis-py messages name host and port, never the password.
    return f"{type(e).__name__}: {e}"
