"""What a person sees in the Dagster UI: plots as images and markdown tables as tables.

A small graph (raw_events → … → conversion_funnel, two models, the leaderboard) is materialised
into a persistent instance in a temporary DAGSTER_HOME; the real ``dagster-webserver`` serves it
and a headless Chromium, driven over the DevTools protocol, opens the asset pages.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from chromium import DevTools, headless_chromium, requires_chromium

REPO = Path(__file__).resolve().parents[1]
# Models the leaderboard needs at least: session_metrics scores these three.
UI_MODELS = ("popular", "item_knn", "gru4rec")
# A MetadataValue flattened to text by str(): the defect this module guards against.
REPR_TEXT = re.compile(r"^\w+MetadataValue\(")


# raw_events → … → the analytics with plots, and two untuned models → the leaderboard: every
# asset that attaches a plot or a markdown table, in seconds (tuning and publishing left out).
UI_ASSETS = (
    "raw_events", "category_tree", "item_property_history", "interactions", "splits",
    "item_catalog", "conversion_funnel", "activity_heatmap", "rfm_segments", "training_data",
    "trained_model", "eval_recommendations", "model_metrics", "session_metrics", "leaderboard",
)  # fmt: skip


@pytest.fixture(scope="module")
def ui_home(tmp_path_factory, small_raw_dir):
    """DAGSTER_HOME and RECSYS_* env of a persistent instance holding materialised assets."""
    from dagster import AssetKey, DagsterInstance
    from quick_models import quick_run_config

    from recsys_assets.definitions import build_definitions
    from recsys_assets.partitions import model_partitions
    from recsys_assets.pipeline import plan_stages, prepare_raw_data, run_stage
    from recsys_assets.settings import Settings

    root = tmp_path_factory.mktemp("ui")
    home, data = root / "dagster_home", root / "data"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {
        "DAGSTER_HOME": str(home),
        "RECSYS_DATA_DIR": str(data),
        "RECSYS_RAW_DIR": str(small_raw_dir),
        "MLFLOW_TRACKING_URI": f"sqlite:///{data / 'mlflow.db'}",
    }
    settings = replace(
        Settings.from_env(),
        data_dir=data,
        raw_dir=small_raw_dir,
        raw_dir_is_default=False,
        duckdb_path=data / "warehouse.duckdb",
        mlflow_tracking_uri=env["MLFLOW_TRACKING_URI"],
    )
    defs = build_definitions(settings)
    with DagsterInstance.from_config(str(home)) as instance:
        prepare_raw_data(defs, instance)
        for stage in plan_stages(defs, [AssetKey(a) for a in UI_ASSETS]):
            models = stage.partitions_def == model_partitions
            run_stage(
                defs,
                instance,
                stage,
                partition_keys=UI_MODELS if models else None,
                run_config=quick_run_config(),  # GRU4Rec with fewer epochs
            )
    return env


def _materialization_metadata(home: str, asset: str) -> dict:
    from dagster import AssetKey, DagsterInstance

    with DagsterInstance.from_config(home) as instance:
        event = instance.get_latest_materialization_event(AssetKey(asset))
    return event.asset_materialization.metadata


def test_stored_metadata_keeps_its_types(ui_home):
    """Every entry of every materialisation is stored typed, never as a MetadataValue's repr."""
    from dagster import DagsterInstance, MarkdownMetadataValue, TextMetadataValue

    with DagsterInstance.from_config(ui_home["DAGSTER_HOME"]) as instance:
        keys = instance.all_asset_keys()
        flattened = []
        for key in keys:
            event = instance.get_latest_materialization_event(key)
            for name, value in event.asset_materialization.metadata.items():
                if isinstance(value, TextMetadataValue) and REPR_TEXT.match(value.text):
                    flattened.append(f"{key.to_user_string()}.{name}")
    assert {k.to_user_string() for k in keys} >= {"conversion_funnel", "leaderboard"}
    assert flattened == []
    funnel = _materialization_metadata(ui_home["DAGSTER_HOME"], "conversion_funnel")
    assert isinstance(funnel["funnel_plot"], MarkdownMetadataValue)
    assert funnel["funnel_plot"].md_str.startswith("![Conversion funnel](data:image/png;base64,")
    assert isinstance(funnel["overall"], MarkdownMetadataValue)
    board = _materialization_metadata(ui_home["DAGSTER_HOME"], "leaderboard")
    assert board["results"].md_str.startswith("| model | P@10 |")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_progress_lines_are_in_the_event_log(ui_home):
    """What the UI's run page shows for a model: training and scoring lines, not silence."""
    from dagster import DagsterInstance

    with DagsterInstance.from_config(ui_home["DAGSTER_HOME"]) as instance:
        messages = [
            record.user_message
            for run in instance.get_runs()
            for record in instance.all_logs(run.run_id)
            if not record.is_dagster_event
        ]
    for model in UI_MODELS:
        assert any(m.startswith(f"training {model} with default parameters") for m in messages)
        assert any(m.startswith(f"scored {model}: ") for m in messages)


@pytest.fixture(scope="module")
def webserver(ui_home, tmp_path_factory):
    """``dagster-webserver`` on a free loopback port, serving the materialised instance."""
    port = _free_port()
    log = tmp_path_factory.mktemp("webserver") / "webserver.log"
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-m", "recsys_assets.definitions",
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env={**os.environ, **ui_home},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/server_info", timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, "dagster-webserver exited"
                assert time.monotonic() < deadline, "dagster-webserver did not answer in 60 s"
                time.sleep(0.2)
        # A fresh instance greets the first visitor with a "Join the Dagster community" dialog
        # over the page; mark it seen, as its "Skip" button does, so it cannot cover the plots.
        request = urllib.request.Request(
            f"{base}/graphql",
            data=json.dumps({"query": "mutation { setNuxSeen }"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert json.load(resp)["data"]["setNuxSeen"] is not None
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    with headless_chromium(tmp_path_factory.mktemp("chromium-profile"), "1400,1000") as tab:
        yield tab


# The asset page's metadata table: one <tr> per entry, its key in the first cell. Short markdown
# renders inline in the value cell; long markdown (a plot) behind a "[Show Markdown]" link that
# opens a dialog.
FIND_ROW = """(key => [...document.querySelectorAll('tr')].find(tr => {
  const cell = tr.querySelector('td');
  // rows of a rendered markdown table sit inside a value cell: not metadata entries
  return cell && !tr.parentElement.closest('td') && cell.innerText.trim() === key;
}))"""


def _open_asset(tab: DevTools, base: str, asset: str) -> None:
    tab.js(f"location.href = {json.dumps(f'{base}/assets/{asset}')}")
    try:
        tab.wait_js(f"!!{FIND_ROW}('preview')", timeout=45, what=f"{asset}'s metadata table")
    except AssertionError:
        print("page text:", tab.js("document.body.innerText")[:3000])
        raise


def _rendered(tab: DevTools, key: str, selector: str) -> list[dict]:
    """The elements matching ``selector`` that the UI renders for metadata entry ``key``."""
    row = f"{FIND_ROW}({json.dumps(key)})"
    show = f"[...{row}.querySelectorAll('a')].find(a => a.innerText.trim() === '[Show Markdown]')"
    inline = f"{row}.querySelector({json.dumps(selector)})"
    # the row renders in steps (the UI streams its queries): wait for the link or the element
    tab.wait_js(f"!!{row} && !!({show} || {inline})", what=f"metadata entry {key}")
    scope = row
    if tab.js(f"!!{show}"):
        tab.js(f"{show}.click()")
        scope = (
            "[...document.querySelectorAll('[role=dialog]')]"
            f".find(d => d.innerText.includes({json.dumps(key)}))"
        )
        tab.wait_js(f"!!{scope}", what=f"the markdown dialog of {key}")
    try:
        return tab.wait_js(
            f"""(() => {{
              const els = [...{scope}.querySelectorAll({json.dumps(selector)})];
              return els.length && els.map(e => ({{
                alt: e.alt || '', src: (e.src || '').slice(0, 30), width: e.naturalWidth || 0,
                shown: e.getBoundingClientRect().width, text: e.innerText || '',
                cells: e.querySelectorAll ? e.querySelectorAll('td').length : 0,
              }}));
            }})()""",
            what=f"<{selector}> of {key}",
        )
    except AssertionError:
        print(f"{key}:", tab.js(f"{scope}.outerHTML")[:3000])
        raise


def _close_dialog(tab: DevTools) -> None:
    tab.js("[...document.querySelectorAll('[role=dialog] button')]"
           ".find(b => b.innerText.trim() === 'Close').click()")  # fmt: skip
    tab.wait_js("!document.querySelector('[role=dialog]')", what="the dialog to close")


def _screenshot(tab: DevTools, path: Path) -> Path:
    shot = tab.call("Page.captureScreenshot", format="png")
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


@pytest.mark.browser
@requires_chromium
def test_plots_render_as_images_and_markdown_tables_as_tables(webserver, chromium, tmp_path):
    _open_asset(chromium, webserver, "conversion_funnel")
    # the defect showed every markdown value as the text "MarkdownMetadataValue(md_str='…"
    assert "MetadataValue(" not in chromium.js("document.body.innerText")

    overall = _rendered(chromium, "overall", "table")
    assert len(overall) == 1 and "view_to_cart" in overall[0]["text"]
    assert overall[0]["cells"] >= 11  # one data row: scope … view_to_purchase

    plot = _rendered(chromium, "funnel_plot", "img")
    assert len(plot) == 1
    assert plot[0]["alt"] == "Conversion funnel"
    assert plot[0]["src"].startswith("data:image/png;base64,")
    assert plot[0]["width"] > 300 and plot[0]["shown"] > 300  # decoded and laid out
    shot = _screenshot(chromium, tmp_path / "conversion_funnel.png")
    assert shot.stat().st_size > 20_000
    _close_dialog(chromium)

    for asset, key in (("activity_heatmap", "heatmap_plot"), ("rfm_segments", "segment_plot")):
        _open_asset(chromium, webserver, asset)
        [image] = _rendered(chromium, key, "img")
        assert image["src"].startswith("data:image/png;base64,") and image["width"] > 300
        _close_dialog(chromium)

    _open_asset(chromium, webserver, "leaderboard")
    [results] = _rendered(chromium, "results", "table")
    header = results["text"].splitlines()[0]
    assert header.split("\t")[:4] == ["model", "P@10", "R@10", "NDCG@10"]
    assert {"popular", "item_knn"} <= set(re.findall(r"^(\w+)\t", results["text"], re.M))
    assert "MetadataValue(" not in chromium.js("document.body.innerText")
    chromium.js(f"{FIND_ROW}('results').scrollIntoView()")
    _screenshot(chromium, tmp_path / "leaderboard.png")
