"""Key names of one deployment (one prefix) and of the list families inside a version.

Redis Cluster places a key by the CRC16 of its hash tag (the text between the first ``{`` and
the next ``}``), or of the whole name when it has none. Two kinds of keys follow from that:

* **deployment keys** ``{p}:...`` share the tag ``{p}``, so they sit in one slot: the pointers,
  counters and overrides, and each version's meta. The switch and rollback scripts read and write
  ``current``/``previous`` and check a version's meta in one atomic script, which Redis Cluster
  allows only for keys of one slot. They are few and small.
* **spread keys** ``p:...`` carry no tag: the whole name is hashed, so a version's bulk data
  (every bucket blob, vocabulary, bounds, weight chunk) is spread over all slots, hence over all
  masters. No script or transaction uses two of them together: the lookup script reads one blob,
  and multi-key reads are non-transactional pipelines that a cluster client splits per node.

A new key must pick one of the two on purpose (``_deployment`` or ``_spread``). The prefix may
not contain braces: they would move the tag and pin or scatter keys by accident.
"""

from __future__ import annotations

from dataclasses import dataclass

HIST_FAMILY = "hist"
CONTROL_AB = "ab_experiment"


@dataclass(frozen=True)
class Keys:
    """Every key name of one deployment (one prefix)."""

    prefix: str = "recsys"

    def __post_init__(self) -> None:
        if not self.prefix or "{" in self.prefix or "}" in self.prefix:
            raise ValueError(
                f"Redis key prefix {self.prefix!r}: must be non-empty and without '{{' or '}}' "
                "(Redis Cluster hash-tag delimiters)"
            )

    def _deployment(self, name: str) -> str:
        """A key in the deployment's slot (tag ``{prefix}``)."""
        return f"{{{self.prefix}}}:{name}"

    def _spread(self, name: str) -> str:
        """A key hashed by its whole name (no tag): its own slot."""
        return f"{self.prefix}:{name}"

    # --- deployment slot: pointers, counters, overrides, version metas -------------------------
    @property
    def current(self) -> str:
        return self._deployment("current")

    @property
    def previous(self) -> str:
        return self._deployment("previous")

    @property
    def seq(self) -> str:
        return self._deployment("seq")

    @property
    def channel(self) -> str:
        # A pub/sub channel, not a key: classic PUBLISH reaches every node of a cluster. Named
        # like the deployment keys so that one prefix reads as one deployment.
        return self._deployment("channel")

    @property
    def control(self) -> str:
        return self._deployment("control")

    # Live availability set by the shop between publishes (admin endpoint): outside the versions,
    # so it holds for every version and model; field item id -> state, "generation" -> token.
    @property
    def item_overrides(self) -> str:
        return self._deployment("item_overrides")

    @property
    def meta_prefix(self) -> str:
        """``meta(v)`` is ``meta_prefix + v + ":meta"`` (the rollback script builds it)."""
        return self._deployment("v:")

    def meta(self, version: str) -> str:
        return f"{self.meta_prefix}{version}:meta"

    @property
    def pages_current(self) -> str:
        return self._deployment("pages:current")

    @property
    def pages_seq(self) -> str:
        return self._deployment("pages:seq")

    # --- spread: feedback stream, a version's bulk data, the pages' report hashes ---------------
    @property
    def feedback(self) -> str:
        return self._spread("feedback")  # one key: every stream command works on a cluster

    def version_prefix(self, version: str) -> str:
        """Common head of a version's spread keys (its meta is under :attr:`meta_prefix`)."""
        return self._spread(f"v:{version}:")

    def vocab(self, version: str, family: str) -> str:
        return f"{self.version_prefix(version)}vocab:{family}"

    def bounds(self, version: str, family: str) -> str:
        return f"{self.version_prefix(version)}bounds:{family}"

    def blob(self, version: str, family: str, bucket: int) -> str:
        return f"{self.version_prefix(version)}blob:{family}:{bucket}"

    def popular(self, version: str) -> str:
        return f"{self.version_prefix(version)}popular"

    def items(self, version: str) -> str:
        return f"{self.version_prefix(version)}items"

    def weights(self, version: str, model: str, array: str, chunk: int) -> str:
        return f"{self.version_prefix(version)}weights:{model}:{array}:{chunk}"

    # The web pages' reports: published by their own asset, on their own schedule, so outside
    # the serving versions (whose cleanup would take them for partial versions).
    def pages(self, publish: int) -> str:
        return self._spread(f"pages:{publish}")

    # --- patterns (SCAN MATCH; braces are literal in Redis glob patterns) ------------------------
    @property
    def all_patterns(self) -> tuple[str, str]:
        """Every key of the deployment: the deployment slot's and the spread ones."""
        return self._deployment("*"), self._spread("*")

    @property
    def version_patterns(self) -> tuple[str, str]:
        """Every key of every version: metas, then spread data."""
        return f"{self.meta_prefix}*", self._spread("v:*")

    def version_of(self, key: bytes | str) -> str | None:
        """The version a key found by :attr:`version_patterns` belongs to."""
        text = key.decode() if isinstance(key, bytes) else key
        for head in (self.meta_prefix, self._spread("v:")):
            if text.startswith(head):
                return text[len(head) :].split(":", 1)[0]
        return None


def rec_family(model: str) -> str:
    return f"rec:{model}"


def sim_family(model: str) -> str:
    return f"sim:{model}"


def control_default_field(version: str) -> str:
    return f"default_model@{version}"
