"""The user's data folder is never written to (issue 7 §1).

The generator writes only into the default folder ($RECSYS_DATA_DIR/raw) and only when it holds
none of the four RetailRocket files; any other missing file stops the main job before anything
is written, naming every missing file and the way to the embedded default.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance

from recsys_assets.core.data.schemas import CATEGORY_TREE_FILE, EVENTS_FILE, PROPERTIES_FILES

RAW_FILES = (EVENTS_FILE, *PROPERTIES_FILES, CATEGORY_TREE_FILE)


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _run_main_job(monkeypatch, data: Path, raw_dir: Path | None, scale: float = 0.002):
    """The main job's own steps (``run_all``) with settings read from the environment."""
    from recsys_assets.definitions import build_definitions
    from recsys_assets.pipeline import run_all
    from recsys_assets.settings import Settings

    monkeypatch.setenv("RECSYS_DATA_DIR", str(data))
    monkeypatch.setenv("RECSYS_DEMO_SCALE", str(scale))
    monkeypatch.setenv("RECSYS_REDIS_PREFIX", "recsys-test-raw-folder")  # never published to
    if raw_dir is None:
        monkeypatch.delenv("RECSYS_RAW_DIR", raising=False)
    else:
        monkeypatch.setenv("RECSYS_RAW_DIR", str(raw_dir))
    settings = Settings.from_env()
    defs = build_definitions(settings)
    with DagsterInstance.ephemeral() as instance:
        run_all(defs, instance, only=["raw_events"], echo=lambda line: None)
    return settings


def _warehouse_rows(path: Path):
    with duckdb.connect(str(path), read_only=True) as con:
        return con.sql(
            "select count(*), sum(visitorid), sum(timestamp) from recsys.raw_events"
        ).fetchone()


def test_user_folder_missing_events_is_never_written(tmp_path, monkeypatch, small_raw_dir):
    """The measured defect: three files in RECSYS_RAW_DIR, no events.csv → synthetic data was
    generated into the user's folder, over their files, and ingested with exit code 0."""
    data = tmp_path / "data"
    # a warehouse holding the user's earlier load, which a failed run must leave as it was
    settings = _run_main_job(monkeypatch, data, small_raw_dir)
    before = _warehouse_rows(settings.duckdb_path)
    assert before[0] > 0

    user = tmp_path / "user-files"
    user.mkdir()
    for name in (*PROPERTIES_FILES, CATEGORY_TREE_FILE):
        shutil.copy(small_raw_dir / name, user / name)
    hashes = _hashes(user)

    with pytest.raises(SystemExit) as stop:
        _run_main_job(monkeypatch, data, user)
    message = str(stop.value)
    assert f"lacks {EVENTS_FILE}" in message
    assert "Nothing was written" in message and "unset RECSYS_RAW_DIR" in message
    assert _hashes(user) == hashes  # byte-identical, and no file added
    assert _warehouse_rows(settings.duckdb_path) == before
    assert not (data / "raw").exists()  # nor was the default generated elsewhere


def test_empty_user_folder_names_every_missing_file(tmp_path, monkeypatch):
    user = tmp_path / "empty"
    user.mkdir()
    with pytest.raises(SystemExit) as stop:
        _run_main_job(monkeypatch, tmp_path / "data", user)
    assert f"lacks {', '.join(RAW_FILES)}." in str(stop.value)
    assert list(user.iterdir()) == []
    assert not (tmp_path / "data" / "warehouse.duckdb").exists()


def test_default_folder_with_some_files_is_not_completed(tmp_path, monkeypatch, small_raw_dir):
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(small_raw_dir / PROPERTIES_FILES[0], raw / PROPERTIES_FILES[0])
    hashes = _hashes(raw)
    with pytest.raises(SystemExit) as stop:
        _run_main_job(monkeypatch, tmp_path / "data", None)
    message = str(stop.value)
    missing = [EVENTS_FILE, PROPERTIES_FILES[1], CATEGORY_TREE_FILE]
    assert f"lacks {', '.join(missing)} (it holds {PROPERTIES_FILES[0]})" in message
    assert "move the others out" in message
    assert _hashes(raw) == hashes


def test_empty_default_folder_gets_the_embedded_default(tmp_path, monkeypatch):
    settings = _run_main_job(monkeypatch, tmp_path / "data", None)
    assert settings.raw_dir == tmp_path / "data" / "raw"
    assert all((settings.raw_dir / name).is_file() for name in RAW_FILES)
    assert _warehouse_rows(settings.duckdb_path)[0] > 0


def test_generator_never_overwrites(tmp_path):
    from recsys_assets.core.generator import GeneratorConfig, ensure_dataset, generate_dataset

    out = tmp_path / "raw"
    out.mkdir()
    (out / CATEGORY_TREE_FILE).write_text("categoryid,parentid\n1,\n")
    hashes = _hashes(out)
    with pytest.raises(FileExistsError, match=CATEGORY_TREE_FILE):
        generate_dataset(out, GeneratorConfig(scale=0.002))
    with pytest.raises(FileExistsError, match=CATEGORY_TREE_FILE):
        ensure_dataset(out, GeneratorConfig(scale=0.002))
    assert _hashes(out) == hashes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no temporary folder left
