"""The change log over HTTP: ``/api/events`` through TestClient, and the Server-Sent Events stream of a real server."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient
from test_serve import serving
from test_web import LOCAL, SECRET, seeded

import optistate
from optistate.web import create_app


@pytest.fixture
def client(store, served):
    seeded(store)
    with TestClient(create_app(served), base_url=LOCAL) as opened:
        yield opened


def test_the_events_api_pages_the_change_log_with_secrets_masked(client, store):
    cost = store.agent("Cost Optimizer")
    newest = store.revision()
    cost.config.set("cost_threshold_usd", 2500)
    cost.config.set("provider_api_key", SECRET + "-rotated")
    events = client.get("/api/events", params={"since": newest}).json()
    assert [(e["agent"], e["kind"], e["key"]) for e in events] == [
        ("Cost Optimizer", "config", "cost_threshold_usd"), ("Cost Optimizer", "config", "provider_api_key")]
    assert events[0]["changes"] == {"config_value": ["1000", "2500"]}
    assert events[1]["old"]["config_value"] == events[1]["new"]["config_value"] == "***"
    assert [e["revision"] for e in events] == sorted(e["revision"] for e in events)
    assert client.get("/api/events", params={"since": newest, "limit": 1}).json() == events[-1:]
    everything = client.get("/api/events", params={"agent": "Cost Optimizer", "limit": 1000}).json()
    assert {e["agent"] for e in everything} == {"Cost Optimizer"} and everything[-2:] == events
    assert SECRET not in client.get("/api/events", params={"limit": 1000}).text
    assert client.get("/api/events", params={"since": "-1"}).json() == {
        "error": "since='-1': must be a whole number of at least 0"}
    assert client.get("/api/events", params={"limit": "1001"}).status_code == 400


def test_the_agent_api_carries_its_recent_history(client, store):
    cost = store.agent("Cost Optimizer")
    cost.config.set("cost_threshold_usd", 3000)
    history = client.get("/api/agents/Cost Optimizer").json()["history"]
    assert history[-1]["key"] == "cost_threshold_usd" and history[-1]["changes"] == {"config_value": ["1000", "3000"]}
    assert {e["agent"] for e in history} == {"Cost Optimizer"} and len(history) <= 50
    assert SECRET not in json.dumps(history)


class Stream:
    """``GET /api/events/stream`` on a real server, read event by event."""

    def __init__(self, base: str, path: str = "/api/events/stream", **headers: str):
        where = urlsplit(base)
        self.connection = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
        self.connection.request("GET", path, headers=headers)
        self.response = self.connection.getresponse()
        assert self.response.status == 200
        assert self.response.getheader("content-type").startswith("text/event-stream")

    def next(self) -> dict[str, str]:
        """The next event's fields (``id``, ``event``, ``data``), skipping comments and the retry line."""
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline().decode().rstrip("\n")
            if not line and fields.get("event"):
                return fields
            name, _, value = line.partition(": ")
            if name in ("id", "event", "data"):
                fields[name] = value

    def close(self) -> None:
        self.connection.close()


def test_the_stream_sends_each_change_another_process_makes(sqlite_url, tmp_path):
    with optistate.connect(sqlite_url) as store:
        seeded(store)
        start = store.revision()
    with open(tmp_path / "serve.log", "w") as log, serving(sqlite_url, log=log) as base:
        stream = Stream(base)
        try:
            with optistate.connect(sqlite_url) as writer:  # this process, not the server's
                cost = writer.agent("Cost Optimizer")
                cost.config.set("cost_threshold_usd", 4000)
                cost.config.set("provider_api_key", SECRET + "-new")
                writer.agent("Performance Tuner").set_status("busy")
            first, second = stream.next(), stream.next()
            assert (first["event"], json.loads(first["data"])["key"]) == ("change", "cost_threshold_usd")
            assert json.loads(first["data"])["changes"] == {"config_value": ["1000", "4000"]}
            assert int(first["id"]) > start
            assert json.loads(second["data"])["key"] == "provider_api_key" and SECRET not in second["data"]
            third = json.loads(stream.next()["data"])
            assert (third["agent"], third["kind"]) == ("Performance Tuner", "state")
        finally:
            stream.close()
        again = Stream(base, **{"Last-Event-ID": first["id"]})  # a browser reconnecting
        try:
            assert json.loads(again.next()["data"])["key"] == "provider_api_key"
        finally:
            again.close()
        only = Stream(base, f"/api/events/stream?since={start}&agent=Performance%20Tuner")
        try:
            assert json.loads(only.next()["data"])["agent"] == "Performance Tuner"
        finally:
            only.close()
    assert SECRET not in (tmp_path / "serve.log").read_text()
