"""Progress lines for long loops in pure code ("scored 40,000/120,000 users (12.3 s)").

Lines go through :mod:`logging` (no Dagster here): ``dagster.yaml`` hands the ``recsys_assets``
loggers to Dagster, so they land in the run's event log and on the terminal of the main job, and
a notebook sees them once it configures logging.
"""

from __future__ import annotations

import logging
import time

# Often enough that a person watching a scale-1.0 run sees it move, rarely enough not to flood.
DEFAULT_EVERY_SECONDS = 5.0


class Progress:
    """Logs ``"{label} {done:,}/{total:,} {unit} ({elapsed} s)"`` at most every ``every_seconds``.

    A loop that finishes before the first line is due stays silent (its caller logs start and
    end); one that logged progress also logs its last step, so the log ends at ``total/total``.
    """

    def __init__(
        self,
        logger: logging.Logger,
        label: str,
        total: int,
        unit: str,
        every_seconds: float = DEFAULT_EVERY_SECONDS,
    ):
        self.logger, self.label, self.total, self.unit = logger, label, total, unit
        self.every_seconds = every_seconds
        self.start = self._last = time.perf_counter()
        self.lines = 0

    def update(self, done: int) -> None:
        now = time.perf_counter()
        finished = done >= self.total
        if now - self._last < self.every_seconds and not (finished and self.lines):
            return
        self._last = now
        self.lines += 1
        self.logger.info(
            "%s %s/%s %s (%.1f s)",
            self.label,
            f"{done:,}",
            f"{self.total:,}",
            self.unit,
            now - self.start,
        )
