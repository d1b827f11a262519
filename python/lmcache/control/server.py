"""Serves the control API (lmcache.control.app) from a thread of the process
that owns the caches, with uvicorn.

A loopback bind needs no token (then only the process's own user is
answered: lmcache.control.peer); any other bind is refused without one. A
port that is taken is a warning for a cache made by an engine (the engine
serves on without the API) and an error for `lmcache serve-control`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
from typing import Optional

from lmcache.control.registry import CacheRegistry, registry
from lmcache.errors import ConfigError

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str) -> None:
    if not is_loopback(host) and not token:
        raise ConfigError(f"config key 'control_host': binding the control API to {host!r} (not a loopback "
                          "address) requires control_token or control_token_file")


class ControlServer:
    """uvicorn serving make_app(caches) on host:port (port 0: any free port), in a daemon thread."""

    def __init__(self, caches: CacheRegistry, host: str, port: int, token: str = "") -> None:
        import uvicorn

        from lmcache.control.app import make_app

        check_bind(host, token)
        # Bound here, so a taken port is an error now and port 0 is known at once.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
            self._sock.listen(128)  # listening now: a second bind of the port fails even with SO_REUSEADDR
        except OSError as e:
            self._sock.close()
            raise ConfigError(f"config key 'control_port': cannot serve the control API on {host}:{port}: "
                              f"{e.strerror}") from None
        self.host, self.port = host, self._sock.getsockname()[1]
        app = make_app(caches, token, owner_uid=None if token else os.geteuid())
        config = uvicorn.Config(app, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="lmcache-control", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def wait_started(self, timeout_s: float = 10.0) -> bool:
        import time

        deadline = time.monotonic() + timeout_s
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._server.started

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._sock.close()


_lock = threading.Lock()
_server: Optional[ControlServer] = None


def attach(engine, name: str, tp_rank: int = 0) -> str:
    """Registers `engine` with this process's registry and, the first time a
    cache with control_port comes, starts the process's control server on
    control_port + tp_rank. Never raises for a port that is taken: an engine
    keeps serving without its control API."""
    global _server
    name = registry().add(name, engine)
    control = engine.config.control
    if not control.control_port:
        return name
    with _lock:
        if _server is None:
            try:
                _server = ControlServer(registry(), control.control_host, control.control_port + tp_rank,
                                        control.token())
                logger.info("lmcache: control API and metrics on %s", _server.url)
            except ConfigError as e:
                logger.warning("lmcache: no control API in this process: %s", e)
    return name


def detach(engine) -> None:
    registry().remove(engine)


def process_server() -> Optional[ControlServer]:
    """The control server this process started, if any."""
    return _server
