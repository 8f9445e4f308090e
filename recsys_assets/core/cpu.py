"""How many threads a library call may use: this process's share of the cores, read at the call.

The main job's worker processes each start on their own share of the cores, and a worker left
alone at the end of a wave is given every core (``recsys_assets.pipeline``). The affinity mask
is read at each call, not once, so such a worker's later scoring and fits use the cores it was
given; a library's own default (OpenMP's, fixed when it loads) would not follow.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """CPU cores this process may run on now (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(num_threads: int) -> int:
    """``num_threads`` itself, or one per available core for 0 (or less)."""
    return int(num_threads) if num_threads and num_threads > 0 else available_cores()
