"""``optistate serve``'s app through Starlette's TestClient, on SQLite and PostgreSQL: pages, API, errors, reads only.

The app runs as uvicorn would run it (its sync endpoints in the thread pool,
the database connection per thread); the real server and browser are in
test_serve.py and test_browser.py.
"""

from __future__ import annotations

import json
import os

import psycopg2
import pytest
from starlette.testclient import TestClient

import optistate
from optistate import demo, transfer
from optistate.web import create_app

SECRET = "sk-planted-5ecret-value-0123456789"
LOCAL = "http://127.0.0.1:8765"


def seeded(store):
    """The demo's four agents, and a sensitive config on Cost Optimizer holding :data:`SECRET`."""
    demo.run(store)
    cost = store.agent("Cost Optimizer")
    cost.config.set("provider_api_key", SECRET, config_type="string", is_sensitive=True, description="provider key")
    return store


@pytest.fixture
def client(store, served):
    seeded(store)
    with TestClient(create_app(served), base_url=LOCAL) as opened:
        yield opened


def every_url(name="Cost Optimizer"):
    """(url, status) of every route the app has, errors included."""
    api = f"/api/agents/{name}"
    return [
        ("/", 200), ("/?type=cost&liveness=alive", 200), (f"/agents/{name}", 200), (f"/agents/{name}?window=24h", 200),
        (f"/agents/{name}?window=7d&type=cost", 200), ("/api/agents", 200), ("/api/agents?type=cost", 200),
        (api, 200), (f"{api}/metrics", 200), (f"{api}/metrics?name=average_savings_percent&agg=max", 200),
        (f"{api}/metrics?name=average_savings_percent&agg=avg&every=5m", 200), ("/metrics", 200),
        ("/static/dashboard.js", 200), ("/static/dashboard.css", 200), ("/api/events", 200),
        (f"/api/events?agent={name}&since=0&limit=1000", 200), ("/api/events?since=x", 400),
        ("/api/events?limit=0", 400),
        ("/api/agents/nobody", 404), ("/agents/nobody", 404), ("/api/agents?liveness=sleepy", 400),
        (f"{api}/metrics?since=yesterday", 400), (f"{api}/metrics?agg=avg", 400), (f"{api}/metrics?every=5m", 400),
        (f"{api}/metrics?name=x&agg=median", 400), (f"{api}/metrics?name=x&agg=avg&every=soon", 400),
        (f"/agents/{name}?window=1y", 400), ("/nowhere", 404), ("/static/missing.js", 404),
    ]  # fmt: skip


def test_no_response_holds_a_sensitive_value(client, store):
    assert store.agent("Cost Optimizer").config["provider_api_key"] == SECRET  # planted: the search can find it
    for url, status in every_url():
        response = client.get(url)
        assert response.status_code == status, (url, response.text)
        assert SECRET not in response.text and SECRET not in str(response.headers), url
    configs = {c["key"]: c for c in client.get("/api/agents/Cost Optimizer").json()["configs"]}
    assert configs["provider_api_key"] == {**configs["provider_api_key"], "value": "***", "sensitive": True}


def test_every_error_is_one_line_of_json(client):
    for url, status in every_url():
        response = client.get(url)
        if status >= 400:
            assert response.headers["content-type"] == "application/json", url
            assert "\n" not in response.text and list(response.json()) == ["error"], url
            assert "Traceback" not in response.text
    assert client.get("/api/agents?liveness=sleepy").json() == {
        "error": "liveness='sleepy': must be one of alive, stale, offline"}
    assert client.get("/api/agents/Cost Optimizer/metrics?since=yesterday").json()["error"].startswith(
        "since='yesterday': must be an ISO-8601 time")
    assert client.get("/api/agents/nobody").json() == {"error": "agent 'nobody' not found; see `optistate agents`"}


def rows_of(store):
    return {model.__name__: sorted(json.dumps(transfer.to_json(row), sort_keys=True) for row in model.select())
            for model in store.models.MODELS}


def test_serving_every_route_writes_nothing(client, store):
    before = rows_of(store)
    for url, _ in every_url():
        client.get(url)
    assert before == rows_of(store) and len(before["AgentMetric"]) == 12


def test_the_overview_api_lists_the_agents_with_liveness_and_filters(client, store):
    store.agent("Performance Tuner").stop()
    rows = {row["name"]: row for row in client.get("/api/agents").json()}
    assert list(rows) == ["Application Monitor", "Cost Optimizer", "Performance Tuner", "Resource Allocator"]
    assert {name: row["liveness"] for name, row in rows.items()} == {
        "Application Monitor": "alive", "Cost Optimizer": "alive", "Performance Tuner": "offline",
        "Resource Allocator": "alive"}
    allocator = rows["Resource Allocator"]
    assert (allocator["error_count"], allocator["last_error"]["error"], allocator["workflow"]) == (
        1, "TimeoutError", "gpu_scaling")
    assert [r["name"] for r in client.get("/api/agents?liveness=offline").json()] == ["Performance Tuner"]
    assert [r["name"] for r in client.get("/api/agents?type=cost&liveness=alive").json()] == ["Cost Optimizer"]
    assert client.get("/api/agents?type=cost&liveness=offline").json() == []


def test_the_agent_api_shows_state_configs_capabilities_leases_and_latest_metrics(client, store):
    lease = store.agent("Cost Optimizer").lock("gpu_pool", ttl=300)
    body = client.get("/api/agents/Cost Optimizer").json()
    assert (body["agent"]["name"], body["liveness"], body["state"]["current_workflow"]) == (
        "Cost Optimizer", "alive", "cost_analysis")
    assert {c["key"] for c in body["configs"]} == {
        "provider_api_key", "cost_threshold_usd", "savings_threshold_percent", "check_interval_minutes"}
    assert {(c["capability_name"], c["is_enabled"]) for c in body["capabilities"]} >= {("gpu_cost_analysis", True)}
    times = {"acquired_at": lease.acquired_at.isoformat(), "expires_at": lease.expires_at.isoformat()}
    assert body["leases"] == [{"resource": "gpu_pool", "token": lease.token, **times}]
    latest = {m["metric_name"]: (m["metric_value"], m["metric_unit"]) for m in body["latest_metrics"]}
    assert latest == {name: (value, unit) for name, value, unit, _ in demo.METRICS["cost"]}


def test_the_metrics_api_gives_points_an_aggregate_or_buckets(client, store):
    from datetime import timedelta

    agent = store.agent("Cost Optimizer")
    start = agent.metrics("average_savings_percent")[0].collection_timestamp
    agent.record_metrics({"name": "average_savings_percent", "value": v, "timestamp": start - timedelta(minutes=i)}
                         for i, v in enumerate((40.0, 30.0, 20.0), start=1))
    agent.flush()
    url = "/api/agents/Cost Optimizer/metrics"
    points = client.get(url, params={"name": "average_savings_percent"}).json()
    assert [p["metric_value"] for p in points] == [20.0, 30.0, 40.0, 42.5]
    assert len(client.get(url, params={"name": "average_savings_percent", "limit": 2}).json()) == 2
    assert client.get(url, params={"name": "average_savings_percent", "agg": "min"}).json() == {
        "name": "average_savings_percent", "agg": "min", "value": 20.0}
    buckets = client.get(url, params={"name": "average_savings_percent", "agg": "avg", "every": "2m"}).json()
    expected = agent.aggregate("average_savings_percent", "avg", every=timedelta(minutes=2))
    assert buckets == [{"bucket_start": at.isoformat(), "value": value} for at, value in expected]
    since = (start - timedelta(minutes=2, seconds=1)).isoformat()
    assert [p["metric_value"] for p in client.get(url, params={"name": "average_savings_percent",
                                                                "since": since}).json()] == [30.0, 40.0, 42.5]


def test_the_agent_page_draws_one_chart_per_metric_from_buckets(client, store):
    from datetime import timedelta

    agent = store.agent("Cost Optimizer")
    now = agent.metrics("average_savings_percent")[0].collection_timestamp
    agent.record_metrics({"name": "average_savings_percent", "value": float(i % 50), "timestamp": now - timedelta(
        minutes=i)} for i in range(1, 7 * 24 * 60))  # a week of one-minute points
    agent.flush()
    page = client.get("/agents/Cost Optimizer?window=7d").text
    assert page.count('<figure class="chart"') == 3
    chart = page[page.index('data-metric="average_savings_percent"'):]
    buckets = int(chart.split('data-buckets="', 1)[1].split('"', 1)[0])
    assert 300 <= buckets <= 337 and chart.count("<circle") >= buckets  # 30-minute buckets, not 10,080 points
    assert "<polyline" in chart and "no points" not in chart[:chart.index("</svg>")]


def test_names_and_values_are_escaped_in_pages(client, store):
    store.start_agent("cost", name='<script>alert("x")</script>')
    page = client.get('/agents/<script>alert("x")</script>').text
    assert '<script>alert("x")</script>' not in page and "&lt;script&gt;" in page


def connections_to(db_url):
    server, name = db_url.rsplit("/", 1)
    with psycopg2.connect(f"{server}/postgres") as admin, admin.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,))
        return cursor.fetchone()[0]


@pytest.mark.postgres
def test_requests_leave_no_connection_open(pg_url):
    """Counted by the server, which sees every connection (SQLite keeps closed files open while others are)."""
    with optistate.connect(pg_url, watch=False) as store:  # a store watching the change log has connections too
        client = TestClient(create_app(seeded(store)), base_url=LOCAL)
        before = connections_to(pg_url)
        for _ in range(3):
            for url, _status in every_url():
                client.get(url)
        assert connections_to(pg_url) == before == 1  # the store's own, in this thread: none per request or thread


def test_a_database_gone_answers_503_in_one_line(store, db_url, backend):
    seeded(store)
    with TestClient(create_app(store), base_url=LOCAL) as client:
        assert client.get("/api/agents").status_code == 200
        if backend == "sqlite":
            os.replace(store.database.database, store.database.database + ".moved")  # a new connection finds none
        else:
            server, name = db_url.rsplit("/", 1)
            admin = psycopg2.connect(f"{server}/postgres")
            admin.autocommit = True
            admin.cursor().execute(f"DROP DATABASE {name} WITH (FORCE)")
            admin.close()
        response = client.get("/api/agents")
    assert response.status_code == 503 and "\n" not in response.text
    assert response.json()["error"].startswith(("database error: no such table", "cannot connect to postgresql://"))
