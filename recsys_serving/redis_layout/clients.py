"""Redis clients from one URL, a single server or a Redis Cluster, and the few calls that differ.

``REDIS_URL`` says which:

    redis://host:port/db            one server (also rediss://, unix://)
    redis+cluster://host:port       a Redis Cluster, reached through any one node (the seed);
                                    the client reads the slot map from it (rediss+cluster:// for
                                    TLS). A cluster has only database 0.

Both the graph (``RedisResource``) and the service (``Settings``) build their clients here, so
the URL is parsed in one place. Everything else in the layout is written for both kinds:
single-key commands, scripts whose keys share one slot (see :mod:`.keys`) and non-transactional
pipelines, which a cluster client splits per node. What remains different is below:
server-wide commands (INFO goes to one node unless told to ask every master), multi-key deletes
(one command per slot), PUBLISH (a cluster client has no key to route it by) and SUBSCRIBE (the
asyncio cluster client has no pub/sub; classic PUBLISH reaches every node, so one node's
connection hears everything).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
SINGLE_SCHEMES = ("redis", "rediss", "unix")
DELETE_BATCH = 1000  # keys per UNLINK (single server) or commands per pipeline (cluster)


@dataclass(frozen=True)
class RedisTarget:
    """What ``REDIS_URL`` names: ``url`` in the form redis-py's ``from_url`` reads."""

    url: str
    cluster: bool


def parse_redis_url(url: str, name: str = "REDIS_URL") -> RedisTarget:
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme in CLUSTER_SCHEMES:
        plain = f"{CLUSTER_SCHEMES[scheme]}://{rest}"
        if urlsplit(plain).path.strip("/") not in ("", "0"):
            raise ValueError(f"{name}: {url!r}: a Redis Cluster has only database 0")
        return RedisTarget(plain, True)
    if sep and scheme in SINGLE_SCHEMES:
        return RedisTarget(url, False)
    raise ValueError(
        f"{name}: {url!r}: want redis://host:port/db (one server) or "
        "redis+cluster://host:port (a Redis Cluster; rediss:// and rediss+cluster:// for TLS)"
    )


def sync_client(url: str, **kwargs):
    """``redis.Redis`` or ``redis.cluster.RedisCluster`` for ``url`` (bytes responses)."""
    target = parse_redis_url(url)
    if not target.cluster:
        return redis.Redis.from_url(target.url, **kwargs)
    try:  # unlike redis.Redis, the cluster client connects at once (to read the slot map)
        return RedisCluster.from_url(target.url, **kwargs)
    except RedisClusterException as exc:
        raise redis.ConnectionError(f"Redis Cluster at {target.url}: {exc}") from exc


def async_client(url: str, *, max_connections: int, timeout: float):
    """An asyncio client with short timeouts, so a dead Redis fails requests fast.

    One server: a blocking pool of ``max_connections`` (a burst waits up to ``timeout`` for a
    connection). Cluster: ``max_connections`` per node; redis-py's asyncio cluster client has no
    blocking pool (it raises when a node's connections run out), so the cap is only a guard.
    """
    target = parse_redis_url(url)
    if target.cluster:
        return AsyncRedisCluster.from_url(
            target.url,
            max_connections=max(max_connections, 512),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        target.url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    return redis.asyncio.Redis(connection_pool=pool)


def is_cluster(client) -> bool:
    return isinstance(client, RedisCluster | AsyncRedisCluster)


def decodes_responses(client) -> bool:
    return bool(client.get_encoder().decode_responses)


def used_memory(client) -> int:
    """``used_memory`` of a sync client's server, summed over the masters of a cluster."""
    if not is_cluster(client):
        return int(client.info("memory")["used_memory"])
    per_node = client.info("memory", target_nodes=RedisCluster.PRIMARIES)  # else one node only
    return sum(int(info["used_memory"]) for info in per_node.values())


def unlink_keys(client, names: Iterable[bytes | str]) -> int:
    """UNLINK ``names`` (sync client): batches on one server, one command per slot on a cluster."""
    names = list(names)
    if not is_cluster(client):
        for a in range(0, len(names), DELETE_BATCH):
            client.unlink(*names[a : a + DELETE_BATCH])
        return len(names)
    by_slot: dict[int, list] = {}
    for key in names:
        by_slot.setdefault(key_slot(key if isinstance(key, bytes) else key.encode()), []).append(
            key
        )
    groups = list(by_slot.values())
    for a in range(0, len(groups), DELETE_BATCH):
        pipe = client.pipeline(transaction=False)
        for group in groups[a : a + DELETE_BATCH]:
            pipe.execute_command("UNLINK", *group)
        pipe.execute()
    return len(names)


async def publish(client, channel: str, message: str) -> None:
    """PUBLISH from an asyncio client; on a cluster any node will do (it forwards to all)."""
    if is_cluster(client):
        await client.execute_command(
            "PUBLISH", channel, message, target_nodes=AsyncRedisCluster.RANDOM
        )
    else:
        await client.publish(channel, message)


class _NodeSubscriber:
    """A pub/sub on one node of a cluster (asyncio PubSub's API), with its own connection.

    It connects on :meth:`subscribe`, so creating it does no I/O, like ``Redis.pubsub()``.
    """

    def __init__(self, cluster: AsyncRedisCluster):
        self._cluster = cluster
        self._client: redis.asyncio.Redis | None = None
        self._pubsub = None

    async def subscribe(self, *channels: str) -> None:
        await self._cluster.initialize()  # the slot map: which nodes exist
        node = self._cluster.get_random_node()
        kwargs = {k: v for k, v in node.connection_kwargs.items() if k not in ("host", "port")}
        pool = redis.asyncio.ConnectionPool(
            connection_class=node.connection_class, host=node.host, port=node.port, **kwargs
        )
        self._client = redis.asyncio.Redis(connection_pool=pool)
        self._pubsub = self._client.pubsub()
        await self._pubsub.subscribe(*channels)

    async def get_message(self, **kwargs):
        return await self._pubsub.get_message(**kwargs)

    async def aclose(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        if self._client is not None:
            await self._client.aclose(close_connection_pool=True)


def subscriber(client):
    """``client.pubsub()``, or for a cluster client a pub/sub on one of its nodes."""
    return _NodeSubscriber(client) if is_cluster(client) else client.pubsub()


async def aclose(client) -> None:
    """Close an asyncio client and its connections (the two kinds take different arguments)."""
    if is_cluster(client):
        await client.aclose()
    else:
        await client.aclose(close_connection_pool=True)
