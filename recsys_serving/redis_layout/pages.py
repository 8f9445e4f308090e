"""The web pages' reports in Redis: one hash per publish, shown through one pointer key.

    {p}:pages:seq               INCR counter numbering publishes
    p:pages:<n>                 hash: "doc:<page>" -> JSON document of a page (home, analytics,
                                experiments), "chart:<name>" -> PNG bytes, "published_at"
    {p}:pages:current           n of the publish the pages show

(``{p}`` is the deployment's hash tag; the hashes carry none, so on Redis Cluster each publish
lands on its own slot. No command uses two of these keys, see :mod:`.keys`.)

The graph's ``ui_reports`` asset writes the whole hash with one HSET (one command: Redis applies
it at once, so no reader sees part of it), then moves the pointer. A page reads the pointer and
then one document; the document carries ``n`` and the page's chart URLs name it, so a page and
its images always come from the same publish. The previous publish is kept, so a page rendered
just before the pointer moved still finds its images; older ones are deleted.

The pages are published on their own schedule, not with the serving versions ``{p}:v:<v>:*``,
whose cleanup would take keys under them that lack a meta for a partial version.
Everything here is single-key, so it works unchanged on Redis Cluster.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

from recsys_serving.redis_layout.codec import jsonable
from recsys_serving.redis_layout.keys import Keys

PAGES = ("home", "analytics", "experiments")
CHART_NAME = re.compile(r"[a-z0-9_]{1,64}")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class PagesReport:
    """What one publish of the pages wrote."""

    publish: int
    previous: int | None
    published_at: str
    payload_bytes: int
    charts: list[str] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)


def _number(raw) -> int | None:
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return int(text) if text.isdigit() else None


def validate_pages(documents: dict[str, dict], charts: dict[str, bytes]) -> None:
    """Every page has a document (a dict), every chart a plain name and PNG bytes."""
    missing = [p for p in PAGES if p not in documents]
    unknown = sorted(set(documents) - set(PAGES))
    if missing or unknown:
        raise ValueError(
            f"pages: need documents for {list(PAGES)}; missing {missing}, unknown {unknown}"
        )
    for page, doc in documents.items():
        if not isinstance(doc, dict):
            raise ValueError(f"pages: document {page!r} is a {type(doc).__name__}, not a dict")
    for name, png in charts.items():
        if not CHART_NAME.fullmatch(name):
            raise ValueError(f"pages: chart name {name!r} must match {CHART_NAME.pattern}")
        if not bytes(png[:8]) == PNG_MAGIC:
            raise ValueError(f"pages: chart {name!r} is not a PNG image")


def publish_pages(
    redis, documents: dict[str, dict], charts: dict[str, bytes], prefix: str = "recsys"
) -> PagesReport:
    """Write one publish of the pages and point the service at it (sync client, the asset's)."""
    validate_pages(documents, charts)
    keys = Keys(prefix)
    publish = int(redis.incr(keys.pages_seq))
    published_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    mapping: dict[str, bytes] = {"published_at": published_at.encode()}
    for page, doc in documents.items():
        body = jsonable({**doc, "publish": publish, "published_at": published_at})
        mapping[f"doc:{page}"] = json.dumps(body, allow_nan=False).encode()
    for name, png in charts.items():
        mapping[f"chart:{name}"] = bytes(png)
    redis.hset(keys.pages(publish), mapping=mapping)  # one command: all of it or nothing
    previous = _number(redis.set(keys.pages_current, publish, get=True))  # atomic swap (SET GET)
    keep = {publish, previous}
    deleted = []
    for key in redis.scan_iter(match=keys.pages("*"), count=1000):  # every master of a cluster
        n = _number((key.decode() if isinstance(key, bytes) else key).rsplit(":", 1)[1])
        if n is not None and n not in keep:
            redis.unlink(key)
            deleted.append(n)
    return PagesReport(
        publish=publish,
        previous=previous,
        published_at=published_at,
        payload_bytes=sum(len(v) for v in mapping.values()),
        charts=sorted(charts),
        deleted=sorted(deleted),
    )


class PagesReader:
    """The service's reads of the pages (``redis.asyncio`` client, bytes responses)."""

    def __init__(self, redis, prefix: str = "recsys"):
        self.redis = redis
        self.keys = Keys(prefix)

    async def current(self) -> int | None:
        return _number(await self.redis.get(self.keys.pages_current))

    async def document(self, publish: int, page: str) -> dict | None:
        raw = await self.redis.hget(self.keys.pages(publish), f"doc:{page}")
        return json.loads(raw) if raw else None

    async def chart(self, publish: int, name: str) -> bytes | None:
        if not CHART_NAME.fullmatch(name):
            return None
        return await self.redis.hget(self.keys.pages(publish), f"chart:{name}")
