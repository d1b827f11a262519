"""Redis / Valkey remote tier on redis-py (hiredis parser when installed).

One URL configures it:
    redis://[:password@]host:port[/db]      a single server
    rediss://...                            TLS
    redis+cluster://[:pw@]h1:p1,h2:p2,...   Redis Cluster from seed nodes
    (rediss+cluster:// for TLS; a plain redis:// URL with several hosts is a cluster too)
Batches go through one pipeline (one round trip); every socket operation has
a timeout; the connection pool reconnects by itself after a server restart.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence
from urllib.parse import unquote, urlsplit

from lmcache.errors import ConfigError
from lmcache.remote.base import RemoteTier, RemoteUnavailable

logger = logging.getLogger(__name__)

KEY_PREFIX = "lmcache:"


def redact(url: str) -> str:
    """The URL without its password (for logs and errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.split("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + netloc).geturl()


class RedisTier(RemoteTier):
    def __init__(self, url: str, *, timeout_s: float) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError
        from redis.retry import Retry

        self._errors = (RedisError, OSError)
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
            raise ConfigError(f"config key 'remote_url': unsupported scheme {scheme!r} "
                              "(allowed: redis, rediss, redis+cluster, rediss+cluster)")
        tls = scheme.startswith("rediss")
        hosts = parts.netloc.rsplit("@", 1)[-1].split(",")
        password = unquote(parts.password) if parts.password else None
        username = unquote(parts.username) if parts.username else None
        self.display_name = redact(url)
        # No client-side retries: a slow or absent server must cost one timeout
        # (a miss), not several; the next call simply tries again.
        common = dict(password=password, username=username or None, ssl=tls, socket_timeout=timeout_s,
                      socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
        try:
            if "cluster" in scheme or len(hosts) > 1:
                from redis.cluster import ClusterNode, RedisCluster

                nodes = [ClusterNode(*_host_port(h)) for h in hosts]
                self._client = RedisCluster(startup_nodes=nodes, **common)
                self.cluster = True
            else:
                host, port = _host_port(hosts[0])
                db = int(parts.path.lstrip("/") or 0)
                self._client = redis.Redis(host=host, port=port, db=db, **common)
                self.cluster = False
        except self._errors as e:
            # A cluster client asks its seeds at start; an unreachable cluster is a
            # miss for now, and we try again on the next call.
            self._client = None
            self._factory_error = _describe(e)
            logger.warning("lmcache remote tier %s unavailable at start: %s", self.display_name, self._factory_error)
            self._url, self._timeout = url, timeout_s
        else:
            self._url, self._timeout = url, timeout_s

    # ----------------------------------------------------------------- helpers
    def _conn(self):
        if self._client is None:
            # Only the cluster client can fail at construction; retry it.
            self.__init__(self._url, timeout_s=self._timeout)
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


def _host_port(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    if not host:
        host, port = hostport, "6379"
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ConfigError(f"config key 'remote_url': bad port in {hostport!r}") from None


def _describe(e: Exception) -> str:
    # redis-py messages name host and port, never the password.
    return f"{type(e).__name__}: {e}"
