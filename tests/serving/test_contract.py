"""The OpenAPI document tells the truth: schemathesis, every check on, against the running service.

The service runs under uvicorn on loopback over a real Redis holding the hand-made bundle (with
a GRU4Rec network, so session requests run the live forward pass), with an admin token so that
the admin endpoints are exercised too. Schemathesis generates requests
from /schema/openapi.json (valid and invalid ones, then stateful sequences) and checks every
answer against the document: status codes, bodies, headers, that valid input is accepted and
invalid input refused, that an unsupported method gets 405 with a true ``Allow`` header.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from litestar.testing import TestClient

from recsys_devtools.redis_server import free_port
from recsys_serving import redis_layout as L
from recsys_serving.app import create_app
from recsys_serving.schemas import MAX_ID as L_MAX_ID
from recsys_serving.settings import Settings

TOKEN = "contract-test-token"
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.fixture
def service_url(r, redis_url, prefix, make_bundle):
    # with a GRU4Rec network: /recommend/session is generated against the live forward pass
    L.publish_bundle(r, make_bundle(gru=True), prefix)
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "RECSYS_REDIS_PREFIX": prefix,
        "RECSYS_ADMIN_TOKEN": TOKEN,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "recsys_serving.app:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v1/health", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


# Business rules are checked against the served catalogue (an unknown category) and across
# fields (price_min <= price_max, exclude_seen needs user_id): no JSON Schema can say either, so
# on the operations that take rules a schema-valid request may get the 400 naming the field.
RULE_OPERATIONS = r"^/api/v1/(recommend|similar|popular)"
SCHEMATHESIS_CONFIG = f"""
[[operations]]
include-path-regex = "{RULE_OPERATIONS}"
[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "401", "403", "404"]
"""


def test_schemathesis_finds_no_contract_failure(service_url, tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    proc = subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(config), "run",
         f"{service_url}/schema/openapi.json", "--checks", "all",
         "--header", f"Authorization: Bearer {TOKEN}", "--max-examples", "40",
         "--request-timeout", "5", "--no-color"],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=tmp_path,  # its example database and reports stay out of the checkout
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-12000:]
    assert "No issues found" in out or " passed" in out, out[-3000:]


def _schema(redis_url: str) -> dict:
    with TestClient(create_app(Settings(redis_url=redis_url, prefix="unused"))) as c:
        return c.get("/schema/openapi.json").json()


def test_request_bodies_are_closed_and_keep_every_constraint(redis_url):
    """The document says what the validator does: unknown fields refused, item ids >= 0."""
    schemas = _schema(redis_url)["components"]["schemas"]
    for name in ("RecommendRequest", "ColdRequest", "SessionRequest", "SimilarRequest",
                 "FeedbackRequest", "DefaultModelRequest", "ExperimentRequest"):  # fmt: skip
        assert schemas[name]["additionalProperties"] is False, name
    item = schemas["SessionRequest"]["properties"]["item_ids"]["items"]
    assert (item["type"], item["minimum"], item["maximum"]) == ("integer", 0, L_MAX_ID)
    timestamp = schemas["FeedbackRequest"]["properties"]["timestamp"]["anyOf"][0]
    assert timestamp["minimum"] == 0


def test_ids_in_paths_and_queries_are_documented_as_integers(redis_url):
    paths = _schema(redis_url)["paths"]
    for path, method, name in [
        ("/api/v1/similar/{item_id}", "post", "item_id"),
        ("/api/v1/users/{user_id}/history", "get", "user_id"),
        ("/api/v1/popular", "get", "category_id"),
    ]:
        (param,) = [p for p in paths[path][method]["parameters"] if p["name"] == name]
        schema = param["schema"].get("oneOf", [param["schema"]])[0]
        assert (schema["type"], schema["minimum"], schema["maximum"]) == ("integer", 0, L_MAX_ID)


def test_similar_body_is_optional_and_every_error_is_listed(redis_url):
    paths = _schema(redis_url)["paths"]
    similar = paths["/api/v1/similar/{item_id}"]["post"]
    assert similar["requestBody"]["required"] is False
    assert {"200", "400", "404", "503"} <= set(similar["responses"])
    assert {"404", "503"} <= set(paths["/api/v1/popular"]["get"]["responses"])
    assert {"401", "403", "404"} <= set(paths["/api/v1/experiment"]["post"]["responses"])


def test_options_lists_every_method_of_the_path(redis_url):
    with TestClient(create_app(Settings(redis_url=redis_url, prefix="unused"))) as c:
        allow = c.options("/api/v1/experiment").headers["allow"]
        assert allow == "DELETE, GET, OPTIONS, POST"
        assert c.options("/api/v1/recommend").headers["allow"] == "OPTIONS, POST"


@pytest.mark.parametrize(
    ("raw", "status"),
    [("10", 200), ("10.0", 200), ("1e1", 400), ("+10", 400), ("1_0", 400), ("١٠", 400),
     ("10.5", 400), (str(2**53 + 1), 400)],
)  # fmt: skip
def test_path_ids_are_integers_as_json_schema_counts_them(client_factory, raw, status):
    resp = client_factory().post(f"/api/v1/similar/{raw}")
    assert resp.status_code == status, resp.text
    if status == 400:
        assert resp.json()["extra"][0]["key"] == "item_id"


@pytest.mark.parametrize(
    ("body", "status"),
    [({"user_id": 100, "n_recommendations": 2.0}, 200), ({"user_id": 100.0}, 200),
     ({"user_id": "100"}, 400), ({"user_id": 100, "n_recommendations": 2.5}, 400),
     ({"user_id": 100, "extra": 1}, 400)],
)  # fmt: skip
def test_body_numbers_are_json_schema_numbers_and_strings_are_not(client_factory, body, status):
    resp = client_factory().post("/api/v1/recommend", json=body)
    assert resp.status_code == status, resp.text


@pytest.fixture
def client_factory(r, redis_url, prefix, bundle):
    L.publish_bundle(r, bundle, prefix)
    clients = []

    def make():
        c = TestClient(create_app(Settings(redis_url=redis_url, prefix=prefix)))
        clients.append(c.__enter__())
        return clients[-1]

    yield make
    for c in clients:
        c.__exit__(None, None, None)
