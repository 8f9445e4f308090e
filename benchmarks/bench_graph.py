"""Whole-graph benchmark (issue 12): every asset and partition of `make run`, seconds, peak RSS.

    python benchmarks/bench_graph.py --scale 1.0 [--work-dir DIR] [--workers N]

Generates the raw files into ``<work>/raw`` when they are missing (kept between runs: generation
is not part of the graph), removes the warehouse, MLflow store and Dagster instance of an earlier
run, then materialises the graph as ``make run`` does (``run_all``: the raw-folder check, then
every run, side by side in ``RECSYS_WORKERS`` workers), into a Dagster instance under
``<work>/dagster_home`` with
the repository's dagster.yaml. Models are published to ``REDIS_URL`` (default 127.0.0.1:6379)
under a throw-away prefix that is deleted afterwards.

Seconds per step come from the instance's event log (STEP_START → STEP_SUCCESS/FAILURE of each
run, so they include loading the inputs through the IO manager, not Dagster's run launch); peak
RSS is the largest sum of RSS over this process and its children, sampled every 0.2 s by a
background thread, during the step; "own RSS" is the peak of the process that ran the step alone.
The totals add the peak sum of PSS (shared pages split between the processes that map them) and
which processes held what at the RSS peak. The table is rewritten to ``<work>/bench_graph.json`` and
``.md`` after every run, so an interrupted run (Ctrl-C, SIGTERM) keeps the steps it finished and
names the one it was in. The load average printed at start and end says how quiet the machine was.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
SAMPLE_SECONDS = 0.2
GB = 1024**3


class MemorySampler(threading.Thread):
    """Every ``SAMPLE_SECONDS``: RSS and PSS of this process plus its children, each process's own
    RSS, and the 1-minute load.

    The sum of RSS counts the shared libraries (torch, numba's LLVM, …) once per worker; PSS
    splits shared pages between the processes that map them, so its sum is what the tree holds.
    Both are reported: RSS is the figure issue 12 set its limit in.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.times: list[float] = []
        self.rss: list[int] = []
        self.pss: list[int] = []
        self.by_pid: list[dict[int, int]] = []
        self.load: list[float] = []
        self._halt = threading.Event()
        self._me = psutil.Process()

    def _tree(self) -> tuple[int, int, dict[int, int]]:
        by_pid: dict[int, int] = {}
        pss = 0
        for process in (self._me, *self._me.children(recursive=True)):
            try:
                info = process.memory_full_info()  # smaps_rollup: ~0.1 ms per process
            except psutil.Error:  # exited between listing and reading
                continue
            by_pid[process.pid] = info.rss
            pss += info.pss
        return sum(by_pid.values()), pss, by_pid

    def run(self) -> None:
        while not self._halt.is_set():
            (rss, pss, by_pid), load = self._tree(), os.getloadavg()[0]
            # appended in this order so a reader never sees a time without its values
            self.rss.append(rss)
            self.pss.append(pss)
            self.by_pid.append(by_pid)
            self.load.append(load)
            self.times.append(time.time())
            self._halt.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def _span(self, start: float, end: float) -> tuple[int, int]:
        n = len(self.times)
        times = self.times[:n]
        lo, hi = bisect.bisect_left(times, start), bisect.bisect_right(times, end)
        if lo >= hi:  # shorter than one sampling period: the nearest sample
            i = min(max(lo, 0), n - 1)
            lo, hi = i, i + 1
        return lo, hi

    def during(self, start: float, end: float, pid: int | None = None) -> tuple[int, int, float]:
        """Peak tree RSS, peak RSS of process ``pid`` and mean load between two epoch times."""
        if not self.times:
            return 0, 0, float("nan")
        lo, hi = self._span(start, end)
        own = max((s.get(pid, 0) for s in self.by_pid[lo:hi]), default=0) if pid else 0
        return max(self.rss[lo:hi]), own, sum(self.load[lo:hi]) / (hi - lo)

    def peak(self) -> int:
        return max(self.rss, default=0)

    def peak_pss(self) -> int:
        return max(self.pss, default=0)

    def at_peak(self) -> tuple[float, dict[int, int]]:
        """When the tree's RSS peaked, and each process's RSS then."""
        if not self.rss:
            return 0.0, {}
        i = max(range(len(self.rss)), key=self.rss.__getitem__)
        return self.times[i], self.by_pid[i]


@dataclass
class Step:
    asset: str
    partition: str
    status: str  # success, failure, or running (interrupted)
    start: float
    seconds: float
    peak_rss_gb: float
    own_rss_gb: float  # the peak RSS of the process that ran the step
    pid: int
    load1: float


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f} (1/5/15 min, {os.cpu_count()} cores)"


def read_steps(instance, sampler: MemorySampler) -> list[Step]:
    """Every step of every run in the instance, timed from its event log, in start order."""
    from dagster import DagsterEventType

    from recsys_assets.partitions import (
        PARTITION_RANGE_END_TAG,
        PARTITION_RANGE_START_TAG,
        PARTITION_TAG,
    )

    kinds = {
        DagsterEventType.STEP_START,
        DagsterEventType.STEP_SUCCESS,
        DagsterEventType.STEP_FAILURE,
    }
    steps: list[Step] = []
    now = time.time()
    for run in instance.get_runs(ascending=True):
        tags = run.tags
        partition = tags.get(PARTITION_TAG, "")
        if PARTITION_RANGE_START_TAG in tags:
            first, last = tags[PARTITION_RANGE_START_TAG], tags.get(PARTITION_RANGE_END_TAG, "")
            partition = first if first == last else f"{first}…{last}"
        started: dict[str, float] = {}
        pids: dict[str, int] = {}
        ended: dict[str, tuple[float, str]] = {}
        for entry in instance.all_logs(run.run_id, of_type=kinds):
            kind = entry.dagster_event.event_type
            if kind == DagsterEventType.STEP_START:
                started[entry.step_key] = entry.timestamp
                pids[entry.step_key] = entry.dagster_event.pid or 0
            else:
                status = "success" if kind == DagsterEventType.STEP_SUCCESS else "failure"
                ended[entry.step_key] = (entry.timestamp, status)
        for key, start in started.items():
            end, status = ended.get(key, (now, "running"))
            pid = pids.get(key, 0)
            peak, own, load = sampler.during(start, end, pid)
            steps.append(
                Step(key, partition, status, start, end - start, peak / GB, own / GB, pid, load)
            )
    return sorted(steps, key=lambda s: s.start)


def read_runs(instance) -> list[dict]:
    """Each Dagster run's assets, partition, start (seconds after the first run's) and length."""
    from recsys_assets.partitions import PARTITION_RANGE_START_TAG, PARTITION_TAG

    records = sorted(instance.get_run_records(), key=lambda r: r.start_time or 0)
    first = next((r.start_time for r in records if r.start_time), 0)
    runs = []
    for record in records:
        if not record.start_time:
            continue
        run = record.dagster_run
        end = record.end_time or time.time()
        runs.append(
            {
                "assets": ", ".join(k.to_user_string() for k in sorted(run.asset_selection or ())),
                "partition": run.tags.get(
                    PARTITION_TAG, run.tags.get(PARTITION_RANGE_START_TAG, "")
                ),
                "start": round(record.start_time - first, 1),
                "seconds": round(end - record.start_time, 1),
            }
        )
    return runs


def render(report: dict) -> str:
    """The markdown table: one row per step, then the totals."""
    lines = [
        "| asset | partition | seconds | peak RSS GB (all) | own RSS GB | load1 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for s in report["steps"]:
        flag = "" if s["status"] == "success" else f" ({s['status']})"
        lines.append(
            f"| {s['asset']}{flag} | {s['partition']} | {s['seconds']:.1f} | "
            f"{s['peak_rss_gb']:.2f} | {s.get('own_rss_gb', 0):.2f} | {s['load1']:.1f} |"
        )
    outside = report["outside_seconds"]
    lines += [
        f"| **sum of steps** | | **{report['steps_seconds']:.1f}** | | | |",
        f"| outside steps (run launch, stage planning) | | {outside:.1f} | | | |"
        if outside >= 0
        else f"| steps side by side ({report.get('workers', 1)} workers): the sum exceeds the "
        f"wall time by | | {-outside:.1f} | | | |",
        f"| **whole graph** | | **{report['graph_seconds']:.1f}** "
        f"({report['graph_seconds'] / 60:.1f} min) | **{report['peak_rss_gb']:.2f}** "
        f"(PSS {report.get('peak_pss_gb', 0):.2f}) | | |",
    ]
    when, by_pid = report.get("peak_at", 0.0), report.get("peak_by_pid", {})
    if by_pid:
        running = [
            f"{s['asset']}[{s['partition']}]" if s["partition"] else s["asset"]
            for s in report["steps"]
            if s["start"] <= when <= s["start"] + s["seconds"]
        ]
        parts = ", ".join(f"pid {pid} {rss / GB:.2f}" for pid, rss in by_pid.items())
        lines += ["", f"at the RSS peak: {parts} GB; running: {', '.join(running) or 'none'}"]
    return "\n".join(lines)


LEADERBOARD_COLUMNS = (
    "model",
    "ndcg_at_10",
    "ndcg_at_10_available",
    "recall_at_10",
    "recall_at_10_available",
    "unavailable_share_at_10",
)


def leaderboard(database: Path) -> list[dict]:
    """The run's leaderboard rows (the quality the timings bought), [] when there is none."""
    import duckdb

    if not database.is_file():
        return []
    with duckdb.connect(str(database), read_only=True) as con:
        try:
            cursor = con.execute("select * from recsys.leaderboard")
        except duckdb.CatalogException:
            return []
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return [{c: row[c] for c in LEADERBOARD_COLUMNS if c in row} for row in rows]


def render_leaderboard(rows: list[dict]) -> str:
    columns = [c for c in LEADERBOARD_COLUMNS if c in rows[0]]
    lines = ["| " + " | ".join(columns) + " |", "|---" + "|---:" * (len(columns) - 1) + "|"]
    for row in rows:
        cells = [row["model"], *("" if row[c] is None else f"{row[c]:.4f}" for c in columns[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(work: Path, report: dict) -> None:
    (work / "bench_graph.json").write_text(json.dumps(report, indent=1))
    (work / "bench_graph.md").write_text(render(report) + "\n")


def generate(raw: Path, scale: float, seed: int) -> float:
    """Write the raw files when missing; the seconds it took (0 when they were there)."""
    if (raw / "events.csv").is_file():
        return 0.0
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "recsys_assets.generate", "--scale", str(scale)]
    cmd += ["--seed", str(seed), "--out", str(raw)]
    subprocess.run(cmd, check=True, cwd=REPO)
    return time.perf_counter() - start


def fresh_state(work: Path) -> Path:
    """Remove what an earlier run left (not the raw files) and set the env the graph reads."""
    for name in ("warehouse.duckdb", "warehouse.duckdb.wal", "mlflow.db"):
        (work / name).unlink(missing_ok=True)
    for name in ("dagster_home", "mlruns", "mlartifacts"):
        shutil.rmtree(work / name, ignore_errors=True)
    home = work / "dagster_home"
    home.mkdir(parents=True)
    # a copy, not a link: the instance settings of this run stay with its results
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    os.environ.update(
        DAGSTER_HOME=str(home),
        RECSYS_DATA_DIR=str(work),
        RECSYS_RAW_DIR=str(work / "raw"),
        RECSYS_DUCKDB_PATH=str(work / "warehouse.duckdb"),
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        REDIS_URL=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
        RECSYS_REDIS_PREFIX=f"recsys-bench-graph-{uuid.uuid4().hex[:8]}",
    )
    return home


def run_config(model_params: str) -> dict | None:
    """The main job's run config, with ``model_params`` (JSON) given to tuning and training;
    None (``make run``'s own) without them."""
    if not model_params:
        return None
    from recsys_assets.pipeline import model_params_run_config

    json.loads(model_params)  # a typo fails here, not after the tables are built
    return model_params_run_config(model_params)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="model partitions trained side by side (RECSYS_WORKERS; default as make run)",
    )
    parser.add_argument(
        "--model-params",
        default="",
        help="per-model parameter overrides for tuning and training, as the assets' "
        'params_json: \'{"ncf": {"max_train_seconds": 75}}\' (default: the models\' own)',
    )
    args = parser.parse_args()
    if args.workers is not None:
        os.environ["RECSYS_WORKERS"] = str(args.workers)
    work = (args.work_dir or Path(f"/tmp/recsys-bench-graph-{args.scale}")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    load_start = load_average()
    print(f"work dir: {work}\nload average at start: {load_start}", flush=True)

    generate_seconds = generate(work / "raw", args.scale, args.seed)
    if generate_seconds:
        print(f"generated scale {args.scale:g} in {generate_seconds:.1f} s", flush=True)
    fresh_state(work)
    # SIGTERM (e.g. `timeout`, `kill`) ends like Ctrl-C: the finally block still writes the table
    signal.signal(signal.SIGTERM, _interrupt)

    import redis
    from dagster import DagsterInstance

    from recsys_assets.definitions import build_definitions
    from recsys_assets.pipeline import run_all
    from recsys_assets.settings import Settings
    from recsys_assets.terminal import quiet_libraries
    from recsys_serving.redis_layout import delete_prefix

    quiet_libraries()
    settings = Settings.from_env()
    sampler = MemorySampler()
    sampler.start()
    report = {
        "scale": args.scale,
        "seed": args.seed,
        "work_dir": str(work),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_average_start": load_start,
        "generate_seconds": generate_seconds,
        "workers": settings.workers,
        "model_params": args.model_params or None,
        "complete": False,
    }
    graph_start = time.perf_counter()
    instance = DagsterInstance.get()

    def record() -> None:
        steps = read_steps(instance, sampler)
        graph = time.perf_counter() - graph_start
        total = sum(s.seconds for s in steps)
        when, by_pid = sampler.at_peak()
        report.update(
            peak_at=when,
            peak_by_pid={str(pid): rss for pid, rss in by_pid.items()},
            runs=read_runs(instance),
            steps=[asdict(s) for s in steps],
            steps_seconds=total,
            outside_seconds=graph - total,
            graph_seconds=graph,
            peak_rss_gb=sampler.peak() / GB,
            peak_pss_gb=sampler.peak_pss() / GB,
            load_average_now=load_average(),
        )
        write_report(work, report)

    def echo(line: str) -> None:
        print(line, flush=True)
        if line.startswith("   "):  # a run (or a stage) finished: the table so far
            record()

    try:
        defs = build_definitions(settings)
        # exactly what make run does: the runs side by side in workers (RECSYS_WORKERS)
        run_all(
            defs, instance, run_config=run_config(args.model_params), echo=echo, settings=settings
        )
        report["complete"] = True
    except KeyboardInterrupt:
        print("interrupted: the table below stops at the step that was running", flush=True)
    finally:
        record()
        sampler.stop()
        delete_prefix(redis.Redis.from_url(settings.redis_url), settings.redis_prefix)
        instance.dispose()

    report["load_average_end"] = load_average()
    write_report(work, report)
    print(f"\nscale {args.scale:g}, seed {args.seed}")
    print(render(report))
    print("\nseconds per Dagster run (steps + launch), from its start in the graph:")
    for run in report["runs"]:
        print(f"  {run['start']:7.1f} {run['seconds']:7.1f}  {run['assets']} {run['partition']}")
    board = leaderboard(work / "warehouse.duckdb")
    if board:
        report["leaderboard"] = board
        write_report(work, report)
        print("\nleaderboard (test split; 'available' = unavailable items dropped, re-ranked):")
        print(render_leaderboard(board))
    print(f"\nload average at start: {report['load_average_start']}")
    print(f"load average at end:   {report['load_average_end']}")
    print(f"written: {work / 'bench_graph.json'}, {work / 'bench_graph.md'}")
    return 0 if report["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
