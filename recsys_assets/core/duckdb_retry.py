"""Open a DuckDB file that another process may be holding, waiting for it instead of failing.

DuckDB lets one process at a time open a database file for writing; a second one gets an
``IOException`` ("Could not set lock on file ... Conflicting lock is held in ... PID n") at
once. The main job runs the graph's runs side by side in several processes
(``recsys_assets.pipeline``), and each holds the warehouse only while it loads or stores
something, for seconds: so a connection waits and tries again, often (a refused open costs
milliseconds) and for long (a large model's blob can take a while to store). The model store
and the warehouse IO manager (``io_managers.py``) connect through here.
"""

from __future__ import annotations

import time

import duckdb

WAIT_SECONDS = 300.0  # longest wait for another process to let go of the file
FIRST_PAUSE = 0.05
LONGEST_PAUSE = 0.5  # a refused open costs milliseconds: poll often, sleep little past a release


def is_lock_conflict(error: BaseException) -> bool:
    """Whether ``error`` is DuckDB refusing a file that another process holds."""
    return isinstance(error, duckdb.IOException) and "lock" in str(error).lower()


def connect(
    database: str, wait_seconds: float = WAIT_SECONDS, **options
) -> duckdb.DuckDBPyConnection:
    """A read-write connection to ``database``, retried while another process holds the file.

    ``options`` go to ``duckdb.connect`` (``config``, ``read_only``). Any other error (a corrupt
    file, a missing folder) is raised at once; after
    ``wait_seconds`` the lock conflict itself is raised, naming the process that holds it.
    """
    deadline = time.monotonic() + wait_seconds
    pause = FIRST_PAUSE
    while True:
        try:
            return duckdb.connect(database, **options)
        except duckdb.IOException as error:
            if not is_lock_conflict(error) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE)
