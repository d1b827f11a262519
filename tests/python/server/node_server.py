"""Starting and stopping a real `lmcache server` process for tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("LMCACHE_")}


class NodeServerProcess:
    def __init__(self, socket_path: str, **config) -> None:
        self.socket_path = socket_path
        self.env = {**BASE_ENV, **{f"LMCACHE_{k.upper()}": str(v) for k, v in config.items()}}
        self.proc = None
        self.start()

    def start(self) -> None:
        lmcache = shutil.which("lmcache")
        cmd = [lmcache] if lmcache else [sys.executable, "-m", "lmcache.cli"]
        self.proc = subprocess.Popen([*cmd, "server", "--socket", self.socket_path], env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if "serving" not in line:
            self.proc.kill()
            raise RuntimeError(f"lmcache server did not start: {line}{self.proc.stderr.read()}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode

    def wait_gone(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while os.path.exists(self.socket_path) and time.monotonic() < deadline:
            time.sleep(0.05)
