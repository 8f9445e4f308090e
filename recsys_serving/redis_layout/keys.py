"""Key names of one deployment (one prefix) and of the list families inside a version."""

from __future__ import annotations

from dataclasses import dataclass

HIST_FAMILY = "hist"
CONTROL_AB = "ab_experiment"


@dataclass(frozen=True)
class Keys:
    """Every key name of one deployment (one prefix)."""

    prefix: str = "recsys"

    @property
    def current(self) -> str:
        return f"{self.prefix}:current"

    @property
    def previous(self) -> str:
        return f"{self.prefix}:previous"

    @property
    def seq(self) -> str:
        return f"{self.prefix}:seq"

    @property
    def channel(self) -> str:
        return f"{self.prefix}:channel"

    @property
    def control(self) -> str:
        return f"{self.prefix}:control"

    @property
    def feedback(self) -> str:
        return f"{self.prefix}:feedback"

    def version_prefix(self, version: str) -> str:
        return f"{self.prefix}:v:{version}:"

    def meta(self, version: str) -> str:
        return f"{self.prefix}:v:{version}:meta"

    def vocab(self, version: str, family: str) -> str:
        return f"{self.prefix}:v:{version}:vocab:{family}"

    def bounds(self, version: str, family: str) -> str:
        return f"{self.prefix}:v:{version}:bounds:{family}"

    def blob(self, version: str, family: str, bucket: int) -> str:
        return f"{self.prefix}:v:{version}:blob:{family}:{bucket}"

    def popular(self, version: str) -> str:
        return f"{self.prefix}:v:{version}:popular"

    def items(self, version: str) -> str:
        return f"{self.prefix}:v:{version}:items"

    def weights(self, version: str, model: str, array: str, chunk: int) -> str:
        return f"{self.prefix}:v:{version}:weights:{model}:{array}:{chunk}"

    # The web pages' reports: published by their own asset, on their own schedule, so outside
    # the serving versions ``{p}:v:*`` (whose cleanup would take them for partial versions).
    @property
    def pages_current(self) -> str:
        return f"{self.prefix}:pages:current"

    @property
    def pages_seq(self) -> str:
        return f"{self.prefix}:pages:seq"

    def pages(self, publish: int) -> str:
        return f"{self.prefix}:pages:{publish}"


def rec_family(model: str) -> str:
    return f"rec:{model}"


def sim_family(model: str) -> str:
    return f"sim:{model}"


def control_default_field(version: str) -> str:
    return f"default_model@{version}"
