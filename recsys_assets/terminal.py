"""What the main job prints: the project's own lines, not Dagster's or the libraries' chatter.

``progress_logger`` is a Dagster logger (named ``progress`` in the Definitions). A run that
selects it in its run config prints

* one line when each step (one asset, of one partition or range) starts, and one when it ends
  with its elapsed seconds — Dagster's own STEP_START/STEP_SUCCESS/STEP_FAILURE events;
* every message an asset logs (``context.log.info``) and every record of the ``recsys_assets``
  Python loggers that the instance captures (``python_logs.managed_python_loggers`` in
  ``dagster.yaml``): the progress inside long steps;

and drops the rest of Dagster's events (resource init, handled outputs, materialisations …),
which stay in the run's event log for the UI. ``quiet_libraries`` silences the deprecation
notices and INFO logging of dagster-mlflow, MLflow and alembic; ``--verbose`` skips both.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings

from dagster import Field, InitLoggerContext, logger

from recsys_assets.partitions import (
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    PARTITION_TAG,
)

_START, _SUCCESS, _FAILURE = "STEP_START", "STEP_SUCCESS", "STEP_FAILURE"


def partition_label(tags: dict[str, str]) -> str:
    """`` [als]`` for one partition, `` [2015-05-03..2015-09-18]`` for a range, else empty."""
    if PARTITION_TAG in tags:
        return f" [{tags[PARTITION_TAG]}]"
    if PARTITION_RANGE_START_TAG in tags:
        first, last = tags[PARTITION_RANGE_START_TAG], tags.get(PARTITION_RANGE_END_TAG, "")
        return f" [{first}]" if first == last else f" [{first}..{last}]"
    return ""


class ProgressHandler(logging.Handler):
    """Formats Dagster log records into the main job's terminal lines."""

    def __init__(self, stream=None, message_level: int = logging.INFO) -> None:
        super().__init__(logging.DEBUG)  # Dagster sends its step events at DEBUG
        self.stream = stream
        self.message_level = message_level
        self._started: dict[tuple[str | None, str], float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format_record(record)
            if line is not None:
                stream = self.stream or sys.stdout
                stream.write(line + "\n")
                stream.flush()
        except Exception:  # a broken terminal must never fail a run
            self.handleError(record)

    def format_record(self, record: logging.LogRecord) -> str | None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        step = meta.get("step_key") or ""
        where = step + partition_label(dict(meta.get("job_tags") or {}))
        if event is None:
            if record.levelno < self.message_level:
                return None
            if meta.get("resource_name") and record.levelno < logging.WARNING:
                return None  # e.g. dagster-mlflow's "Starting a new mlflow run with id …"
            message = meta.get("orig_message") or record.getMessage()
            level = "" if record.levelno < logging.WARNING else f"{record.levelname}: "
            return f"    {where}: {level}{message}" if where else f"    {level}{message}"
        kind = event.event_type_value
        key = (meta.get("run_id"), step)
        if kind == _START:
            self._started[key] = time.perf_counter()
            return f"  > {where} started"
        if kind in (_SUCCESS, _FAILURE):
            began = self._started.pop(key, None)
            seconds = time.perf_counter() - began if began is not None else float("nan")
            if kind == _SUCCESS:
                return f"  < {where} done in {seconds:.1f} s"
            return f"  ! {where} FAILED after {seconds:.1f} s"
        return None


@logger(
    {"log_level": Field(str, is_required=False, default_value="INFO")},
    description="The main job's terminal: step start/end with seconds, and messages at "
    "log_level and above.",
)
def progress_logger(init_context: InitLoggerContext) -> logging.Logger:
    level = logging.getLevelName(init_context.logger_config["log_level"].upper())
    log = logging.Logger(f"recsys.progress.{init_context.run_id}", logging.DEBUG)
    log.addHandler(ProgressHandler(message_level=level))
    return log


def quiet_libraries() -> None:
    """No deprecation notices or INFO logging from the libraries on a user's terminal.

    Filters alone are not enough: a library may reset them when it is imported in the middle
    of a run (mlxtend's ``fpcommon`` runs ``simplefilter("always", DeprecationWarning)``), so
    the display hook drops these categories too.
    """
    from dagster import BetaWarning, PreviewWarning

    quiet = (BetaWarning, PreviewWarning, DeprecationWarning, FutureWarning)
    for category in quiet:
        warnings.filterwarnings("ignore", category=category)
    show = warnings.showwarning

    def show_unless_quiet(message, category, *args, **kwargs):
        if not issubclass(category, quiet):
            show(message, category, *args, **kwargs)

    warnings.showwarning = show_unless_quiet
    # MLflow configures its logger from this variable when it is imported (default INFO)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("mlflow", "alembic", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)
