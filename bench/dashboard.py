"""``optistate serve`` at fleet size: the overview of 10,000 agents, ``/api/agents``, and a week-long chart.

    python bench/dashboard.py [--dsn postgresql://...] [--sqlite] [--agents 10000] [--repeat 20]

Without ``--dsn`` (or ``$TEST_PG_DSN``) a throwaway PostgreSQL server is started from the machine's
binaries; ``--sqlite`` measures a SQLite file instead. The app runs in a real uvicorn server on a loopback
port, and the requests go through a real socket. Measurements, printed; no test asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from typing import Any

import psycopg2
import uvicorn
from playhouse.test_utils import count_queries

import optistate
from optistate.fields import utcnow
from optistate.testing import postgres_dsn
from optistate.web import create_app

TYPES = ("cost", "performance", "resource", "application")
WEEK_OF_MINUTES = 7 * 24 * 60


def median_ms(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median and slowest milliseconds of one call of ``fn`` over ``repeat`` calls (after one warm-up)."""
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), max(samples)


@contextmanager
def server(store: optistate.Store) -> Iterator[str]:
    """The dashboard in a uvicorn server on a free loopback port, in a thread; yields its base URL."""
    config = uvicorn.Config(create_app(store), host="127.0.0.1", port=0, log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    while not running.started:
        time.sleep(0.01)
    port = running.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        running.should_exit = True
        thread.join()


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return bytes(response.read())


def fleet(store: optistate.Store, agents: int) -> None:
    """``agents`` agents of the four types, a lease held by every 100th, an error recorded by every 10th."""
    start = time.perf_counter()
    for i in range(agents):
        agent = store.start_agent(TYPES[i % 4], f"agent-{i:05d}", ttl=3600)
        if i % 100 == 0:
            agent.lock(f"resource-{i}", ttl=3600)
        if i % 10 == 0:
            agent.fail_workflow(RuntimeError("simulated"))
    print(f"started {agents:,} agents in {time.perf_counter() - start:.1f} s")


def week_of_points(store: optistate.Store) -> optistate.AgentHandle:
    """One agent with a point a minute for 7 days (10,080 points) of ``gpu_utilization``."""
    agent = store.start_agent("resource", "chart", ttl=3600)
    now = utcnow()
    agent.record_metrics({"name": "gpu_utilization", "value": float(i % 100), "unit": "percent",
                          "timestamp": now - timedelta(minutes=i)} for i in range(WEEK_OF_MINUTES))
    agent.flush()
    return agent


def measure(url: str, agents: int, repeat: int) -> None:
    with optistate.connect(url, watch=False) as store:  # as `optistate serve` opens it; no watch's queries counted
        fleet(store, agents)
        with count_queries() as counted:
            rows = store.overview()
        print(f"store.overview() of {len(rows):,} agents: {counted.count} query")
        chart = week_of_points(store)
        since = utcnow() - timedelta(days=7)
        buckets = chart.aggregate("gpu_utilization", "avg", since=since, every=timedelta(minutes=30))
        points = chart.metrics("gpu_utilization", since=since)
        print(f"a 7-day chart: {len(buckets)} buckets of 30 minutes fetched, instead of {len(points):,} points")
        bucket_ms = median_ms(lambda: chart.aggregate("gpu_utilization", "avg", since=since,
                                                      every=timedelta(minutes=30)), repeat)
        point_ms = median_ms(lambda: chart.metrics("gpu_utilization", since=since), repeat)
        print(f"  aggregate(every=30m) {bucket_ms[0]:.1f} ms median; reading the points {point_ms[0]:.1f} ms median")
        with server(store) as base:
            size = len(fetch(f"{base}/api/agents"))
            median, worst = median_ms(lambda: fetch(f"{base}/api/agents"), repeat)
            print(f"GET /api/agents ({agents + 1:,} agents, {size / 1e6:.1f} MB of JSON): "
                  f"{median:.0f} ms median, {worst:.0f} ms slowest of {repeat} (target < 200 ms)")
            page = median_ms(lambda: fetch(f"{base}/agents/chart?window=7d"), repeat)
            print(f"GET /agents/chart?window=7d (the 7-day chart drawn): {page[0]:.0f} ms median")
            scrape = median_ms(lambda: fetch(f"{base}/metrics"), repeat)
            print(f"GET /metrics ({agents + 1:,} agents): {scrape[0]:.0f} ms median")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="a PostgreSQL URL (default: $TEST_PG_DSN or a throwaway server)")
    parser.add_argument("--sqlite", action="store_true", help="measure a SQLite file instead of PostgreSQL")
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    print(f"optistate {optistate.__version__}")
    if args.sqlite:
        with tempfile.TemporaryDirectory() as folder:
            print("SQLite")
            measure(f"sqlite:///{folder}/bench.db", args.agents, args.repeat)
        return 0
    with ExitStack() as stack:
        base = args.dsn or stack.enter_context(postgres_dsn())
        name = f"bench_{uuid.uuid4().hex[:8]}"
        admin = psycopg2.connect(base)
        admin.autocommit = True
        admin.cursor().execute(f"CREATE DATABASE {name}")
        try:
            print(f"PostgreSQL {admin.server_version}")
            measure(f"{base.rsplit('/', 1)[0]}/{name}", args.agents, args.repeat)
        finally:
            admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
