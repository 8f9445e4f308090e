"""The published page documents (home, analytics, experiments) as the service reads them.

A document never changes once published, so it is decoded once per (publish, page); only the
pointer is read on every page view (one GET: pages are for people, not for load).
"""

from __future__ import annotations

import math
from collections import OrderedDict

from recsys_serving.redis_layout.pages import PagesReader

KEEP_DOCUMENTS = 8  # three pages of the current publish and of the one before, with room


class PublishedPages:
    def __init__(self, redis, prefix: str):
        self.reader = PagesReader(redis, prefix)
        self._docs: OrderedDict[tuple[int, str], dict] = OrderedDict()

    async def document(self, page: str) -> dict | None:
        """The current publish's document of ``page``, or None when none is published."""
        for _ in range(2):  # a publish between reading the pointer and the hash: read again
            publish = await self.reader.current()
            if publish is None:
                return None
            key = (publish, page)
            doc = self._docs.get(key)
            if doc is None:
                doc = await self.reader.document(publish, page)
                if doc is None:
                    continue
                self._docs[key] = doc
                while len(self._docs) > KEEP_DOCUMENTS:
                    self._docs.popitem(last=False)
            return doc
        return None

    async def chart(self, publish: int, name: str) -> bytes | None:
        return await self.reader.chart(publish, name)


def format_value(value, fmt: str = "text") -> str:
    """How a page shows a published figure (``fmt`` from the page table's column)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if fmt == "bool":
        return "yes" if value else "no"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)  # a text where a number was expected: shown as it is, never a 500
    if fmt == "int":
        return f"{int(value):,}"
    if fmt == "float":
        return f"{value:.4f}"
    if fmt == "pct":
        pct = 100 * value + 0.0
        digits = 2 if abs(pct) < 10 else 1
        return f"{pct:.{digits}f} %" if round(pct, digits) else f"{0:.{digits}f} %"
    if fmt == "ratio":
        return f"{value:.2f}×"
    if fmt == "money":
        return f"{value + 0.0:,.2f}" if round(value, 2) else "0.00"  # never "-0.00"
    if fmt == "p":
        return "< 0.001" if value < 0.001 else f"{value:.3f}"
    if fmt == "seconds":
        return f"{value:.1f} s"
    return str(value)
