"""Real redis-server processes for tests: bound to 127.0.0.1 on free ports,
no persistence, stopped by the fixtures (and killed if a test dies)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time

import pytest


def free_port(cluster: bool = False) -> int:
    """A free port on 127.0.0.1; for a cluster node also port+10000 (its bus), and <= 55535."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            for p in ([port, port + 10000] if cluster else [port]):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


class RedisServer:
    def __init__(self, *extra: str, password: str | None = None, port: int | None = None) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
        self.port = port or free_port(cluster="--cluster-enabled" in extra)
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="lmcache-redis-")
        self.extra = list(extra)
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                "--dir", self.dir, "--protected-mode", "no", *self.extra]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def cli(self, *args: str) -> str:
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        return subprocess.run(["redis-cli", "-p", str(self.port), *auth, *args], capture_output=True, text=True,
                              timeout=30).stdout

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """Three masters, no replicas, slots spread by redis-cli --cluster create."""

    def __init__(self, nodes: int = 3) -> None:
        self.servers: list[RedisServer] = []
        try:
            self._create(nodes)
        except BaseException:
            self.stop()
            raise

    def _create(self, nodes: int) -> None:
        for _ in range(nodes):
            self.servers.append(RedisServer("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                            "--cluster-node-timeout", "2000"))
        out = subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{s.port}" for s in self.servers],
                              "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"cluster create failed: {out.stdout[-500:]} {out.stderr[-500:]}")
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in s.cli("cluster", "info") for s in self.servers):
            if time.monotonic() > deadline:
                raise RuntimeError("cluster did not become ok")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers)

    def stop(self) -> None:
        for s in self.servers:
            s.stop()
