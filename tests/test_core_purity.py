"""recsys_assets.core is pure code: usable from a notebook without the frameworks around it."""

from __future__ import annotations

import json
import subprocess
import sys

FRAMEWORKS = ("dagster", "litestar", "redis", "mlflow")


def test_core_imports_neither_dagster_litestar_redis_nor_mlflow():
    """Every module of recsys_assets.core, imported in a fresh interpreter, loads none of them."""
    code = (
        "import importlib, json, pkgutil, sys, recsys_assets.core as core\n"
        "names = [m.name for m in pkgutil.walk_packages(core.__path__, 'recsys_assets.core.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "top = sorted({m.split('.')[0] for m in sys.modules})\n"
        "print(json.dumps({'modules': names, 'top': top}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # the walk really covered every folder of core (a broken walk would pass vacuously)
    folders = {name.split(".")[2] for name in seen["modules"]}
    assert {"data", "generator", "analytics", "models", "evaluation"} <= folders
    assert len(seen["modules"]) >= 40
    assert [m for m in FRAMEWORKS if m in seen["top"]] == []
