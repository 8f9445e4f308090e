"""The Redis layout: encodings, publish/switch/rollback/cleanup, a publish killed half-way."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import redis as redis_lib

from recsys_devtools.synthetic_bundle import synthetic_bundle
from recsys_serving import redis_layout as L

from .layout_reads import current_version, read_meta, read_user_list


def test_encode_lists_bytes_by_hand():
    codes = np.array([[0, 127, 128, 16384], [5, -1, -1, -1]])
    scores = np.array([[4.0, 3.0, 2.0, 0.0], [0.5, 0, 0, 0]], np.float32)
    out, offsets = L.encode_lists(codes, scores)
    row0 = bytes(out[offsets[0] : offsets[1]])
    row1 = bytes(out[offsets[1] : offsets[2]])
    # q = rint(s / 4 * 255) = 255, 191, 128, 0 -> drops 0, 64, 63, 128 -> nibbles 0,15,15,15
    assert row0 == (
        struct.pack("<BBff", 4, 1, 4.0, 0.0)
        + bytes([0xF0, 0xFF, 64, 63, 128])
        + bytes([0x00, 0x7F, 0x80, 0x01, 0x80, 0x80, 0x01])
    )
    # one score: hi == lo, level 0, a drop of 255 from the top escapes
    assert row1 == struct.pack("<BBff", 1, 1, 0.5, 0.5) + bytes([0x0F, 0xFF, 0x05])
    vocab = np.arange(20000) * 10
    items, got = L.decode_list(row0, vocab)
    assert items.tolist() == [0, 1270, 1280, 163840]
    np.testing.assert_allclose(got, [4.0, 191 * 4 / 255, 128 * 4 / 255, 0.0], rtol=1e-6)
    items, got = L.decode_list(row1, vocab)
    assert items.tolist() == [50] and got.tolist() == [0.5]


def test_scores_that_rise_are_stored_one_byte_each():
    out, offsets = L.encode_lists(np.array([[1, 2, 3]]), np.array([[0.0, 1.0, 0.5]], np.float32))
    payload = bytes(out)
    assert payload[1] == 0  # flags: not monotone
    assert payload[10:13] == bytes([0, 255, 128])
    items, scores = L.decode_list(payload, np.array([7, 8, 9, 10]))
    assert items.tolist() == [8, 9, 10]
    np.testing.assert_allclose(scores, [0.0, 1.0, 128 / 255], rtol=1e-6)


def test_vocab_orders_by_frequency_then_id():
    v = L.Vocab.from_lists(np.array([[5, 9, 2], [9, 2, -1], [9, 7, -1]]))
    assert v.ids.tolist() == [9, 2, 5, 7]
    assert v.encode(np.array([[7, 9, -1]])).tolist() == [[3, 0, -1]]


def test_every_published_list_reads_back(r, prefix, bundle):
    L.publish_bundle(r, bundle, prefix)
    for m in bundle.models:
        for uid, items, scores in zip(m.user_ids, m.items, m.scores, strict=True):
            got_items, got_scores = read_user_list(r, m.name, int(uid), prefix)
            keep = items >= 0
            assert got_items.tolist() == items[keep].tolist()
            span = scores[keep].max() - scores[keep].min()
            np.testing.assert_allclose(got_scores, scores[keep], atol=span / 510 + 1e-6)
    assert read_user_list(r, "als", 400, prefix) is None
    assert read_user_list(r, "nope", 100, prefix) is None


def test_many_buckets_round_trip(r, prefix):
    b = synthetic_bundle(3000, 400, ("a",), similar_models=(), seed=3)
    report = L.publish_bundle(r, b, prefix, blob_bytes=4000)
    meta = read_meta(r, prefix)
    assert meta["families"]["rec:a"]["buckets"] > 50
    m = b.models[0]
    for i in np.random.default_rng(0).choice(len(m.user_ids), 200, replace=False):
        items, _ = read_user_list(r, "a", int(m.user_ids[i]), prefix)
        assert items.tolist() == m.items[i][m.items[i] >= 0].tolist()
    for uid in (0, 2, 3 * 3000 + 7):  # between ids, below the first, above the last
        assert read_user_list(r, "a", uid, prefix) is None
    assert 0 < report.bytes_per_user_list < 400
    assert report.redis_bytes > 0 and report.keys > 50


def test_versions_switch_keep_previous_and_roll_back(r, prefix, bundle):
    r1 = L.publish_bundle(r, bundle, prefix)
    r2 = L.publish_bundle(r, bundle, prefix)
    r3 = L.publish_bundle(r, bundle, prefix)
    assert (r1.previous, r2.previous, r3.previous) == (None, r1.version, r2.version)
    assert r3.deleted_versions == [r1.version]
    assert not list(r.scan_iter(match=f"{prefix}:v:{r1.version}:*"))
    assert current_version(r, prefix) == r3.version
    assert L.rollback(r, prefix) == r2.version
    assert current_version(r, prefix) == r2.version
    assert r.get(L.Keys(prefix).previous).decode() == r3.version
    assert L.rollback(r, prefix) == r3.version  # and forward again


def test_rollback_without_previous_fails(r, prefix, bundle):
    L.publish_bundle(r, bundle, prefix)
    with pytest.raises(redis_lib.ResponseError, match="no previous version"):
        L.rollback(r, prefix)


def test_switch_refuses_a_version_without_meta(r, prefix):
    keys = L.Keys(prefix)
    switch = r.register_script(L.SWITCH_LUA)
    with pytest.raises(redis_lib.ResponseError, match="incomplete"):
        switch(keys=[keys.current, keys.previous, keys.meta("99")], args=["99", keys.channel])
    assert current_version(r, prefix) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: setattr(b, "default_model", "svd"), "default_model"),
        (lambda b: b.models[0].items.__setitem__((1, 3), 60), r"row 1 \(id 200\)"),
        (lambda b: b.models[1].items.__setitem__((0, 0), -5), "negative item id"),
        (lambda b: setattr(b, "history_events", np.array(["view", "buy", "view"])), "buy"),
        (lambda b: setattr(b, "item_price", b.item_price[:3]), "item_price"),
        (
            lambda b: setattr(b, "ab_experiment", {"name": "x", "control": "als",
                                                   "treatment": "svd", "treatment_share": 0.5}),
            "treatment",
        ),
    ],
)  # fmt: skip
def test_bad_bundles_are_refused_with_the_field_named(r, prefix, bundle, change, message):
    change(bundle)
    with pytest.raises(ValueError, match=message):
        L.publish_bundle(r, bundle, prefix)
    assert current_version(r, prefix) is None


def test_decode_responses_client_is_refused(redis_url, prefix, bundle):
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses"):
        L.publish_bundle(client, bundle, prefix)


KILLED_PUBLISH = textwrap.dedent(
    """
    import os, sys, redis
    from recsys_serving.redis_layout import publish_bundle
    from recsys_devtools.synthetic_bundle import synthetic_bundle

    def die(keys, nbytes):
        if keys >= 6:
            os._exit(17)  # as if the process were killed: no cleanup, no exception handling

    client = redis.Redis.from_url(sys.argv[1])
    publish_bundle(client, synthetic_bundle(500, 80, seed=5), sys.argv[2],
                   on_progress=die, batch_keys=2, blob_bytes=2000)
    """
)


def test_publish_killed_half_way_keeps_the_old_version(r, redis_url, prefix, bundle):
    from litestar.testing import TestClient

    from recsys_serving.app import create_app
    from recsys_serving.settings import Settings

    good = L.publish_bundle(r, bundle, prefix)
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_PUBLISH, redis_url, prefix],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert proc.returncode == 17, proc.stderr
    partial = str(int(good.version) + 1)
    assert list(r.scan_iter(match=f"{prefix}:v:{partial}:*")), "the killed publish wrote nothing"
    assert not r.exists(L.Keys(prefix).meta(partial))
    assert current_version(r, prefix) == good.version
    with TestClient(create_app(Settings(redis_url=redis_url, prefix=prefix))) as client:
        body = client.post("/api/v1/recommend", json={"user_id": 100, "n_recommendations": 2})
        assert body.status_code == 200
        assert body.json()["version"] == good.version
        assert [x["item_id"] for x in body.json()["recommendations"]] == [10, 20]
    nxt = L.publish_bundle(r, bundle, prefix)
    assert partial in nxt.deleted_versions
    assert not list(r.scan_iter(match=f"{prefix}:v:{partial}:*"))
    assert nxt.previous == good.version
