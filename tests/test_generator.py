"""The synthetic RetailRocket generator: format, determinism, marginals and planted structure."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys_assets.core.data.schemas import CATEGORY_TREE_FILE, EVENTS_FILE, PROPERTIES_FILES
from recsys_assets.core.generator import (
    REAL_COUNTS,
    TRUTH_FILE,
    GeneratorConfig,
    ensure_dataset,
    generate_dataset,
)

SCALE = 0.01
ALL_FILES = (EVENTS_FILE, *PROPERTIES_FILES, CATEGORY_TREE_FILE, TRUTH_FILE)
START_MS = int(datetime(2015, 5, 3, tzinfo=UTC).timestamp() * 1000)
END_MS = int(datetime(2015, 9, 19, tzinfo=UTC).timestamp() * 1000)  # exclusive
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    return generate_dataset(out, GeneratorConfig(scale=SCALE, seed=3))


@pytest.fixture(scope="module")
def events(generated) -> pl.DataFrame:
    return pl.read_csv(
        generated.out_dir / EVENTS_FILE,
        schema_overrides={"transactionid": pl.Int64, "event": pl.Utf8},
    )


@pytest.fixture(scope="module")
def properties(generated) -> pl.DataFrame:
    return pl.concat(
        [
            pl.read_csv(generated.out_dir / name, infer_schema=False).with_columns(
                pl.col("timestamp", "itemid").cast(pl.Int64)
            )
            for name in PROPERTIES_FILES
        ]
    )


@pytest.fixture(scope="module")
def truth(generated) -> dict:
    return json.loads((generated.out_dir / TRUTH_FILE).read_text(encoding="utf-8"))


def _digest(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in ALL_FILES}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    cfg = GeneratorConfig(scale=0.003, seed=11)
    a = generate_dataset(tmp_path / "a", cfg)
    generate_dataset(tmp_path / "b", cfg)
    generate_dataset(tmp_path / "c", GeneratorConfig(scale=0.003, seed=12))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    other = _digest(tmp_path / "c")
    assert other[EVENTS_FILE] != _digest(tmp_path / "a")[EVENTS_FILE]
    assert other[PROPERTIES_FILES[0]] != _digest(tmp_path / "a")[PROPERTIES_FILES[0]]
    assert a.n_events == a.n_views + a.n_addtocarts + a.n_transactions


def test_headers_line_endings_and_number_formats(generated):
    out = generated.out_dir
    expected = {
        EVENTS_FILE: b"timestamp,visitorid,event,itemid,transactionid\n",
        PROPERTIES_FILES[0]: b"timestamp,itemid,property,value\n",
        PROPERTIES_FILES[1]: b"timestamp,itemid,property,value\n",
        CATEGORY_TREE_FILE: b"categoryid,parentid\n",
    }
    for name, header in expected.items():
        data = (out / name).read_bytes()
        assert data.startswith(header), name
        assert b"\r" not in data and data.endswith(b"\n"), name
        data.decode("utf-8")

    lines = (out / EVENTS_FILE).read_text(encoding="utf-8").splitlines()[1:]
    # Ints never carry ".0"; transactionid is empty except on transactions.
    view_or_cart = re.compile(r"^\d{13},\d+,(view|addtocart),\d+,$")
    transaction = re.compile(r"^\d{13},\d+,transaction,\d+,\d+$")
    bad = [x for x in lines if not (view_or_cart.match(x) or transaction.match(x))]
    assert not bad, bad[:3]

    tree = (out / CATEGORY_TREE_FILE).read_text(encoding="utf-8").splitlines()[1:]
    assert all(re.fullmatch(r"\d+,(\d+)?", x) for x in tree)
    assert any(x.endswith(",") for x in tree)  # roots have an empty parent

    prop_line = re.compile(r"^\d{13},\d+,(categoryid|available|\d+),[^,\n]+$")
    for name in PROPERTIES_FILES:
        with open(out / name, encoding="utf-8") as f:
            next(f)
            head = [next(f).rstrip("\n") for _ in range(2000)]
        assert all(prop_line.match(x) for x in head), name


def test_counts_follow_the_scale_and_the_event_mix(generated, events):
    counts = dict(events.group_by("event").len().iter_rows())
    assert counts["view"] == round(REAL_COUNTS["views"] * SCALE) == generated.n_views
    assert counts["addtocart"] == round(REAL_COUNTS["addtocarts"] * SCALE)
    assert counts["transaction"] == round(REAL_COUNTS["transactions"] * SCALE)
    share = {k: v / events.height for k, v in counts.items()}
    assert share["view"] == pytest.approx(0.967, abs=0.005)
    assert share["addtocart"] == pytest.approx(0.025, abs=0.003)
    assert share["transaction"] == pytest.approx(0.008, abs=0.002)
    assert events["visitorid"].n_unique() == round(REAL_COUNTS["visitors"] * SCALE)
    assert events["itemid"].n_unique() == pytest.approx(
        REAL_COUNTS["items_with_events"] * SCALE, rel=0.1
    )
    assert generated.n_property_rows == pytest.approx(
        REAL_COUNTS["property_rows"] * SCALE, rel=0.05
    )


def test_timestamps_are_unix_ms_inside_the_period_with_weekly_and_daily_rhythm(events):
    ts = events["timestamp"]
    assert ts.min() >= START_MS and ts.max() < END_MS
    t = events.filter(pl.col("event") == "view").select(
        pl.from_epoch("timestamp", time_unit="ms").alias("t")
    )["t"]
    by_hour = t.dt.hour().value_counts().sort("t")["count"].to_numpy()
    assert by_hour[18:23].mean() > 2.5 * by_hour[4:10].mean()  # evening peak (UTC)
    by_weekday = t.dt.weekday().value_counts().sort("t")["count"].to_numpy()  # 1 = Monday
    assert by_weekday[:2].mean() > 1.15 * by_weekday[5]  # Mon/Tue busier than Saturday
    assert t.dt.date().n_unique() == 139


def test_heavy_tails_sessions_and_bots(events, truth):
    views = events.filter(pl.col("event") == "view")
    per_item = views.group_by("itemid").len()["len"].sort(descending=True).to_numpy()
    top = per_item[: len(per_item) // 100].sum() / per_item.sum()
    assert top > 0.10  # top 1% of items carry ten times their share or more

    per_visitor = events.group_by("visitorid").len()
    assert (per_visitor["len"] <= 2).mean() > 0.7

    bots = truth["bot_visitor_ids"]
    assert len(bots) >= 1
    bot_counts = per_visitor.filter(pl.col("visitorid").is_in(bots))["len"]
    assert bot_counts.min() >= 300
    assert bot_counts.min() > 50 * per_visitor["len"].median()
    peak = (
        events.filter(pl.col("visitorid").is_in(bots))
        .group_by("visitorid", pl.col("timestamp") // HOUR_MS)
        .len()["len"]
        .max()
    )
    assert peak > 200  # what the cleaning step's bot rule looks for
    others = per_visitor.filter(~pl.col("visitorid").is_in(bots))["len"]
    assert others.max() < 1000

    # Sessions: a visitor's gaps are mostly short; sessions are separated by long ones.
    gaps = (
        events.sort("visitorid", "timestamp")
        .with_columns(gap=pl.col("timestamp").diff().over("visitorid"))
        .drop_nulls("gap")["gap"]
    )
    short = (gaps < 30 * 60_000).mean()
    assert 0.5 < short < 0.95
    assert ((gaps > 30 * 60_000) & (gaps < 60 * 60_000)).mean() < 0.02


def test_funnel_order(events):
    views = events.filter(pl.col("event") == "view").select("visitorid", "itemid", vts="timestamp")
    carts = events.filter(pl.col("event") == "addtocart").with_row_index("cart")
    preceded = (
        carts.join(views, on=["visitorid", "itemid"])
        .filter(
            (pl.col("vts") < pl.col("timestamp"))
            & (pl.col("timestamp") - pl.col("vts") < 30 * 60_000)
        )
        .get_column("cart")
        .n_unique()
    )
    assert preceded == carts.height

    tx = events.filter(pl.col("event") == "transaction").with_row_index("tx")
    assert tx["transactionid"].null_count() == 0
    assert events.filter(pl.col("event") != "transaction")["transactionid"].null_count() == (
        events.height - tx.height
    )
    cart_times = carts.select("visitorid", "itemid", cts="timestamp")
    bought_after_cart = (
        tx.join(cart_times, on=["visitorid", "itemid"])
        .filter(pl.col("cts") < pl.col("timestamp"))
        .get_column("tx")
        .n_unique()
    )
    assert bought_after_cart == tx.height
    # One transaction id: one visitor, items within seconds of each other; some hold several.
    per_tx = tx.group_by("transactionid").agg(
        visitors=pl.col("visitorid").n_unique(),
        spread=pl.col("timestamp").max() - pl.col("timestamp").min(),
        items=pl.len(),
    )
    assert (per_tx["visitors"] == 1).all() and per_tx["spread"].max() <= 10_000
    assert (per_tx["items"] >= 2).sum() >= 10


def test_category_tree_is_an_acyclic_forest_of_depth_at_least_two(generated, properties):
    tree = pl.read_csv(
        generated.out_dir / CATEGORY_TREE_FILE, schema_overrides={"parentid": pl.Int64}
    )
    assert tree["categoryid"].is_unique().all()
    parent = dict(zip(tree["categoryid"].to_list(), tree["parentid"].to_list(), strict=True))
    assert all(p is None or p in parent for p in parent.values())
    depth = {}
    for c in parent:  # a few hundred categories: walking up is fine
        d, node, seen = 0, c, set()
        while parent[node] is not None:
            assert node not in seen, f"cycle through {node}"
            seen.add(node)
            node, d = parent[node], d + 1
        depth[c] = d
    assert max(depth.values()) >= 2
    assert sum(p is None for p in parent.values()) >= 4
    assert tree.height == generated.n_categories
    used = properties.filter(pl.col("property") == "categoryid")["value"].cast(pl.Int64)
    assert used.is_in(tree["categoryid"].implode()).all()


def test_weekly_property_snapshots(generated, events, properties):
    sizes = [properties.filter(pl.col("timestamp") > 0).height]  # sanity: parsed
    assert sizes[0] == generated.n_property_rows
    per_file = [
        sum(1 for _ in open(generated.out_dir / name, encoding="utf-8")) - 1
        for name in PROPERTIES_FILES
    ]
    assert 0.4 < per_file[0] / sum(per_file) < 0.6

    snaps = np.sort(properties["timestamp"].unique().to_numpy())
    assert (np.diff(snaps) == 7 * 24 * HOUR_MS).all() and START_MS < snaps[0] and snaps[-1] < END_MS
    # Every item has category, availability and price at its first snapshot.
    first = properties.group_by("itemid").agg(first=pl.col("timestamp").min())
    at_first = properties.join(first, on="itemid").filter(pl.col("timestamp") == pl.col("first"))
    have = (
        at_first.filter(pl.col("property").is_in(["categoryid", "available", "790"]))
        .group_by("itemid")
        .agg(pl.col("property").n_unique())
    )
    assert have.height == first.height and (have["property"] == 3).all()
    assert events["itemid"].is_in(first["itemid"].implode()).all()

    price = properties.filter(pl.col("property") == "790")
    assert price["value"].str.contains(r"^n\d+\.000$").all()
    changes = price.sort("itemid", "timestamp").group_by("itemid").agg(pl.col("value").n_unique())
    assert 0.1 < (changes["value"] > 1).mean() < 0.9  # prices move for some items, not all
    avail = properties.filter(pl.col("property") == "available")
    assert set(avail["value"].unique()) == {"0", "1"}
    flips = avail.group_by("itemid").agg(pl.col("value").n_unique())
    assert 0.1 < (flips["value"] > 1).mean() < 0.9
    cats = properties.filter(pl.col("property") == "categoryid").group_by("itemid").len()
    assert 0 < (cats["len"] > 1).mean() < 0.05  # a few items move category, once
    hashed = properties.filter(~pl.col("property").is_in(["categoryid", "available", "790"]))
    assert hashed["value"].str.contains(r"^(n\d+\.000|\d+)( (n\d+\.000|\d+))*$").all()


def test_planted_bundles_are_bought_together_far_above_chance(events, truth):
    tx = events.filter(pl.col("event") == "transaction").select("transactionid", "itemid").unique()
    n_tx = tx["transactionid"].n_unique()
    count = dict(tx.group_by("itemid").len().iter_rows())
    baskets = [set(b) for b in tx.group_by("transactionid").agg("itemid")["itemid"].to_list()]
    lifts = []
    for bundle in truth["bundles"]:
        assert 2 <= len(bundle) <= 3
        for a, b in itertools.combinations(bundle, 2):
            together = sum(a in s and b in s for s in baskets)
            assert together >= 1, (a, b)
            lifts.append(n_tx * together / (count[a] * count[b]))
    assert len(truth["bundles"]) >= 5
    assert min(lifts) > 3 and np.median(lifts) > 10


def test_planted_transitions_are_followed_far_above_chance(events, truth):
    successors = {int(k): set(v) for k, v in truth["transitions"]["sample_most_popular"].items()}
    pairs = (
        events.filter(
            (pl.col("event") == "view") & ~pl.col("visitorid").is_in(truth["bot_visitor_ids"])
        )
        .sort("visitorid", "timestamp")
        .with_columns(
            nxt=pl.col("itemid").shift(-1).over("visitorid"),
            gap=pl.col("timestamp").diff().shift(-1).over("visitorid"),
        )
        .filter((pl.col("gap") < 30 * 60_000) & (pl.col("nxt") != pl.col("itemid")))
        .filter(pl.col("itemid").is_in(list(successors)))
    )
    a, b = pairs["itemid"].to_numpy(), pairs["nxt"].to_numpy()
    assert len(a) > 500
    hit = np.mean([y in successors[x] for x, y in zip(a, b, strict=True)])
    chance = np.mean(
        [
            y in successors[x]
            for x, y in zip(a, np.random.default_rng(0).permutation(b), strict=True)
        ]
    )
    assert hit > 0.35 and hit > 10 * chance


def test_planted_taste_users_stay_in_their_root_categories(events, properties, generated):
    cat = (
        properties.filter(pl.col("property") == "categoryid")
        .group_by("itemid")
        .agg(cat=pl.col("value").first().cast(pl.Int64))
    )
    tree = pl.read_csv(
        generated.out_dir / CATEGORY_TREE_FILE, schema_overrides={"parentid": pl.Int64}
    )
    parent = dict(zip(tree["categoryid"].to_list(), tree["parentid"].to_list(), strict=True))

    def root(c: int) -> int:
        while parent[c] is not None:
            c = parent[c]
        return c

    roots = cat.with_columns(root=pl.col("cat").map_elements(root, return_dtype=pl.Int64))
    views = events.filter(pl.col("event") == "view").join(roots, on="itemid")
    # First views of sessions are where taste acts; compare a visitor's two most distant views.
    per_user = (
        views.sort("timestamp")
        .group_by("visitorid")
        .agg(first=pl.col("root").first(), last=pl.col("root").last(), n=pl.len())
        .filter(pl.col("n").is_between(3, 900))
    )
    same = (per_user["first"] == per_user["last"]).mean()
    market = views.group_by("root").len()["len"].to_numpy() / views.height
    assert same > 2 * float((market**2).sum())  # far above two random views sharing a root


def test_ensure_dataset_generates_once_and_atomically(tmp_path):
    raw = tmp_path / "data" / "raw"
    cfg = GeneratorConfig(scale=0.002, seed=5)
    first = ensure_dataset(raw, cfg)
    assert first is not None and first.out_dir == raw
    assert all((raw / name).exists() for name in ALL_FILES)
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["raw"]  # no temp folder left
    stamp = (raw / EVENTS_FILE).stat().st_mtime_ns
    assert ensure_dataset(raw, cfg) is None
    assert (raw / EVENTS_FILE).stat().st_mtime_ns == stamp


def test_project_reader_accepts_the_files(generated):
    from recsys_assets.core.data import retailrocket

    retailrocket.validate_raw_dir(generated.out_dir)
    events, report = retailrocket.read_events(generated.out_dir / EVENTS_FILE)
    assert events.height == generated.n_events and report.duplicates_dropped == 0
    tree, _ = retailrocket.read_category_tree(generated.out_dir / CATEGORY_TREE_FILE)
    assert tree.height == generated.n_categories


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="GeneratorConfig.scale"):
        GeneratorConfig(scale=0)
    with pytest.raises(ValueError, match="p_repeat"):
        GeneratorConfig(p_chain=0.8, p_repeat=0.3)
    with pytest.raises(ValueError, match="start/end"):
        GeneratorConfig(start="yesterday")


def test_cli_prints_a_summary(tmp_path, capsys):
    from recsys_assets.generate import main

    assert main(["--scale", "0.002", "--out", str(tmp_path / "raw"), "--seed", "1"]) == 0
    assert "events" in capsys.readouterr().out and (tmp_path / "raw" / EVENTS_FILE).exists()
    assert main(["--scale", "0.002", "--out", str(tmp_path / "raw"), "--if-missing"]) == 0
    assert "nothing generated" in capsys.readouterr().out
