"""optistate against raw psycopg2 on one PostgreSQL server, in one run.

    python bench/bench.py [--dsn postgresql://...] [--points 100000] [--repeat 500]

Without ``--dsn`` (or ``$TEST_PG_DSN``) a throwaway server is started from the
machine's PostgreSQL binaries. Every figure is a ratio against psycopg2
running the same SQL on the same server in the same run, because absolute
times on shared machines are noise; round trips are counted per operation.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import psycopg2
from playhouse.test_utils import count_queries

import optistate
from optistate.database import query_log_parameters
from optistate.metrics import COLUMNS, COPY_ESCAPES
from optistate.testing import postgres_dsn


def timed(fn: Callable[[], Any], repeat: int) -> float:
    """Median seconds of one call of ``fn`` over ``repeat`` calls."""
    return compare(fn, lambda: None, repeat)[0]


def compare(ours: Callable[[], Any], theirs: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median seconds of one call of each, calls interleaved so that load on the machine hits both alike."""
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, into in ((ours, samples[0]), (theirs, samples[1])):
            start = time.perf_counter()
            fn()
            into.append(time.perf_counter() - start)
    return statistics.median(samples[0]), statistics.median(samples[1])


def report(label: str, ours: float, raw: float, unit: str = "µs", scale: float = 1e6, note: str = "") -> None:
    print(
        f"{label:<34} optistate {ours * scale:>10.1f} {unit}   psycopg2 {raw * scale:>10.1f} {unit}   "
        f"ratio {ours / raw:>5.2f}x {note}"
    )


def captured(fn: Callable[[], Any]) -> tuple[Any, list[tuple[str, Any]]]:
    """Run ``fn`` and return its result and the (sql, params) peewee sent."""
    # optistate masks config-write parameters in peewee's log; the bench replays them, so it needs them whole.
    with query_log_parameters(), count_queries() as counter:
        result = fn()
    return result, [record.msg for record in counter.get_queries()]


def replay(raw: Any, statements: list[tuple[str, Any]]) -> None:
    """Send ``statements`` on an autocommit connection, in a transaction when there are several."""
    cursor = raw.cursor()
    if len(statements) > 1:
        cursor.execute("BEGIN")
    for sql, params in statements:
        cursor.execute(sql, params)
    if len(statements) > 1:
        cursor.execute("COMMIT")


def bench_start(store: optistate.Store, raw: Any, repeat: int) -> None:
    _, statements = captured(lambda: store.start_agent("cost", name="warm-up"))
    print(f"start_agent('cost'): {len(statements)} statement(s) sent, transaction control not counted")
    for sql, _ in statements:
        print(f"    {sql[:110]}{'…' if len(sql) > 110 else ''}")
    names = iter(range(10**9))

    def ours() -> None:
        store.start_agent("cost", name=f"agent-{next(names)}")

    # The raw side replays the SQL optistate sent, each plan for an agent that does not exist yet.
    plans = iter([captured(ours)[1] for _ in range(repeat)])
    raw.cursor().execute("DELETE FROM agents WHERE name LIKE 'agent-%%'")
    raw.commit()

    raw.autocommit = True
    report("start_agent (new agent)", *compare(ours, lambda: replay(raw, next(plans)), repeat))
    existing = store.start_agent("cost", name="restart")
    _, restart_sql = captured(lambda: store.start_agent("cost", name="restart"))

    restart = lambda: store.start_agent("cost", name="restart")  # noqa: E731
    report("start_agent (restart)", *compare(restart, lambda: replay(raw, restart_sql), repeat))
    raw.autocommit = False
    assert existing.config["cost_threshold_usd"] == 1000


def bench_heartbeat(store: optistate.Store, raw: Any, repeat: int) -> None:
    agent = store.start_agent("cost", name="heartbeat")
    (_, statements) = captured(agent.heartbeat)
    sql, params = statements[0]
    raw.autocommit = True
    cursor = raw.cursor()
    report(
        "heartbeat()",
        *compare(agent.heartbeat, lambda: cursor.execute(sql, params), repeat * 4),
        note=f"({len(statements)} statement; target ≤ 1.20x)",
    )
    raw.autocommit = False


def bench_config(store: optistate.Store, raw: Any, repeat: int) -> None:
    agent = store.start_agent("cost", name="config")
    agent.config["cost_threshold_usd"]  # the first read loads the cache
    cursor = raw.cursor()
    sql = "SELECT config_value, config_type FROM agent_configs WHERE agent_id = %s AND config_key = %s"

    def theirs() -> None:
        cursor.execute(sql, (str(agent.id), "cost_threshold_usd"))
        int(cursor.fetchone()[0])

    report(
        "config read (cached)",
        timed(lambda: agent.config["cost_threshold_usd"], repeat * 20),
        timed(theirs, repeat),
        note="(served from memory; refresh() re-reads)",
    )
    report("config refresh() (one SELECT)", *compare(agent.config.refresh, theirs, repeat))
    raw.rollback()


def bench_ingest(store: optistate.Store, raw: Any, points: int) -> None:
    agent = store.start_agent("performance", name="ingest")
    agent.buffer.size = points + 1  # one flush, as the raw side does one COPY
    metadata = [{"region": r, "gpu": g} for r in ("us-west", "us-east") for g in range(4)]
    start = time.perf_counter()
    for i in range(points):
        agent.record_metric("gpu_utilization", i * 0.01, "percent", "gauge", metadata[i % 8])
    agent.flush()
    ours = time.perf_counter() - start

    agent_id, now = str(agent.id), optistate.fields.utcnow()
    rows = [
        (str(uuid.uuid4()), agent_id, "gpu_utilization", i * 0.01, "percent", "gauge", json.dumps(metadata[i % 8]), now)
        for i in range(points)
    ]
    start = time.perf_counter()
    out = io.StringIO()
    for row in rows:
        out.write("\t".join(str(v).translate(COPY_ESCAPES) for v in row) + "\n")
    out.seek(0)
    with raw:
        raw.cursor().copy_expert(f"COPY agent_metrics ({', '.join(COLUMNS)}) FROM STDIN", out)
    theirs = time.perf_counter() - start
    print(
        f"{'ingest ' + format(points, ',') + ' points':<34} optistate {points / ours:>10,.0f} rows/s "
        f"COPY {points / theirs:>10,.0f} rows/s   share {theirs / ours:>5.2f} of COPY (target ≥ 0.50)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="a PostgreSQL URL (default: $TEST_PG_DSN or a throwaway server)")
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=500)
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        base = args.dsn or stack.enter_context(postgres_dsn())
        name = f"bench_{uuid.uuid4().hex[:8]}"
        admin = psycopg2.connect(base)
        admin.autocommit = True
        admin.cursor().execute(f"CREATE DATABASE {name}")
        url = f"{base.rsplit('/', 1)[0]}/{name}"
        try:
            store = stack.enter_context(optistate.connect(url))
            raw = psycopg2.connect(url)
            print(
                f"optistate {optistate.__version__} on {store.database.server_version} (PostgreSQL), "
                f"psycopg2 {psycopg2.__version__.split()[0]}"
            )
            bench_start(store, raw, args.repeat)
            bench_heartbeat(store, raw, args.repeat)
            bench_config(store, raw, args.repeat)
            bench_ingest(store, raw, args.points)
            raw.close()
            store.close()
        finally:
            admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
