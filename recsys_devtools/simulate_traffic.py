"""Replay test-period behaviour against the running service, so the online loop has traffic.

For a seeded sample of test users (``recsys.splits``, read-only) it asks the service for
recommendations, posts an impression for each item shown, and a click when the item is one the
user really interacted with in the test period. Bounded in users and seconds, and only against
a loopback address (it is a load generator: never point it at someone else's service).

    python -m recsys_devtools.simulate_traffic --users 500 --max-seconds 120
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:8000"


class NotLoopbackError(ValueError):
    """The URL's host resolves to an address that is not this machine's loopback."""


def check_loopback(url: str) -> None:
    """Refuse any URL whose host is not (or does not resolve only to) a loopback address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotLoopbackError(f"{url!r}: want http://HOST:PORT with a loopback HOST")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 80, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise NotLoopbackError(f"{url!r}: cannot resolve {parts.hostname!r}: {exc}") from exc
    addresses = {info[4][0] for info in infos}
    outside = sorted(a for a in addresses if not ipaddress.ip_address(a).is_loopback)
    if outside:
        raise NotLoopbackError(
            f"{url!r} resolves to {', '.join(outside)}, not a loopback address: the simulator "
            "only sends traffic to a service on this machine"
        )


def sample_test_users(
    duckdb_path: str, n_users: int, seed: int
) -> list[tuple[int, frozenset[int]]]:
    """A seeded sample of test users with the items each touched in the test period."""
    import duckdb

    with duckdb.connect(duckdb_path, read_only=True) as con:
        rows = con.execute(
            """select user_id, list(distinct item_id) from recsys.splits where split = 'test'
               group by user_id order by hash(user_id + ?), user_id limit ?""",
            [seed, n_users],
        ).fetchall()
    return [(int(user), frozenset(int(i) for i in items)) for user, items in rows]


@dataclass
class Summary:
    users: int = 0
    recommend_calls: int = 0
    impressions: int = 0
    clicks: int = 0
    errors: Counter = field(default_factory=Counter)
    by_arm: Counter = field(default_factory=Counter)  # (arm or model, event) -> count
    seconds: float = 0.0
    stopped: str = "all users done"

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else float("nan")


def simulate(
    client,
    users: Iterable[tuple[int, frozenset[int]]],
    k: int = 10,
    max_seconds: float = 120.0,
    progress: bool = True,
) -> Summary:
    """Drive ``client`` (an ``httpx.Client`` on the service, or Litestar's ``TestClient``)."""
    from tqdm import tqdm

    users = list(users)
    summary = Summary()
    start = time.monotonic()
    bar = tqdm(users, desc="simulated users", unit="user", disable=not progress)
    for user, touched in bar:
        if time.monotonic() - start > max_seconds:
            summary.stopped = f"time limit of {max_seconds:g} s"
            break
        resp = client.post("/api/v1/recommend", json={"user_id": user, "n_recommendations": k})
        summary.recommend_calls += 1
        if resp.status_code != 200:
            summary.errors[f"recommend {resp.status_code}"] += 1
            if resp.status_code == 503:
                summary.stopped = "service unavailable (503): is a version published?"
                break
            continue
        answer = resp.json()
        summary.users += 1
        for rank, item in enumerate(answer["recommendations"], start=1):
            events = ["impression", "click"] if item["item_id"] in touched else ["impression"]
            for event in events:
                body = {"user_id": user, "item_id": item["item_id"], "event": event,
                        "rank": rank, "model": answer["model"]}  # fmt: skip
                if answer.get("arm"):
                    body.pop("model")  # the service assigns the arm's model itself
                posted = client.post("/api/v1/feedback", json=body)
                if posted.status_code != 202:
                    summary.errors[f"feedback {posted.status_code}"] += 1
                    continue
                label = posted.json().get("arm") or posted.json().get("model") or ""
                summary.by_arm[(label, event)] += 1
                summary.impressions += event == "impression"
                summary.clicks += event == "click"
        bar.set_postfix(impressions=summary.impressions, clicks=summary.clicks)
    bar.close()
    summary.seconds = time.monotonic() - start
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("RECSYS_SERVICE_URL", DEFAULT_URL))
    parser.add_argument(
        "--duckdb",
        default=os.environ.get("RECSYS_DUCKDB_PATH")
        or os.path.join(os.environ.get("RECSYS_DATA_DIR", "data"), "warehouse.duckdb"),
    )
    parser.add_argument("--users", type=int, default=500, help="test users to replay (max)")
    parser.add_argument("--k", type=int, default=10, help="recommendations shown per user")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop after this long")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    if args.users < 1 or args.k < 1 or args.max_seconds <= 0:
        parser.error("--users, --k and --max-seconds must be positive")
    try:
        check_loopback(args.url)
    except NotLoopbackError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    if not os.path.exists(args.duckdb):
        print(f"no warehouse at {args.duckdb}: run `make run` first", file=sys.stderr)
        return 2
    import httpx

    users = sample_test_users(args.duckdb, args.users, args.seed)
    with httpx.Client(base_url=args.url, timeout=5.0) as client:
        summary = simulate(client, users, args.k, args.max_seconds)
    print(
        f"{summary.users} users, {summary.recommend_calls} recommend calls, "
        f"{summary.impressions} impressions, {summary.clicks} clicks "
        f"(CTR {summary.ctr:.4f}) in {summary.seconds:.1f} s; stopped: {summary.stopped}"
    )
    for (label, event), n in sorted(summary.by_arm.items()):
        print(f"  {label or '-'}: {n} {event}s")
    if summary.errors:
        print(f"  errors: {dict(summary.errors)}", file=sys.stderr)
    return 1 if summary.users == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
