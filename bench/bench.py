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
import multiprocessing
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


def bench_leases(store: optistate.Store, raw: Any, repeat: int) -> None:
    """lock() then release(): the same two statements from psycopg2, the release with the token it got."""
    agent = store.start_agent("resource", name="leases")
    lease, (acquire,) = captured(lambda: agent.lock("bench-ours"))
    _, (release,) = captured(lease.release)

    def ours() -> None:
        agent.lock("bench-ours").release()

    def params(statement: tuple[str, Any], token: int | None = None) -> list[Any]:
        values = ["bench-raw" if value == "bench-ours" else value for value in statement[1]]
        return values if token is None else [*values[:-1], token]  # the release's last parameter is the token

    raw.autocommit = True
    cursor = raw.cursor()

    def theirs() -> None:
        cursor.execute(acquire[0], params(acquire))
        token = cursor.fetchone()[0]
        cursor.execute(release[0], params(release, token))

    report("lock() + release()", *compare(ours, theirs, repeat), note="(2 statements; target ≤ 1.30x)")
    raw.autocommit = False


def _write_in_turn(url: str, values: int, stamps: Any) -> None:
    """Another process: set the config to 1, 2, … in turn, sending the wall-clock time of each commit."""
    store = optistate.connect(url, watch=False)
    agent = store.agent("fresh")
    for value in range(1, values + 1):
        stamps.recv()  # the reader is ready for the next value
        agent.config.set("cost_threshold_usd", value)
        stamps.send(time.time())
    store.close()


def bench_freshness(url: str, samples: int) -> None:
    """How long until a value another process commits is what ``agent.config[key]`` reads, with no refresh()."""
    store = optistate.connect(url)  # watch=True: the store's config watch keeps the cache current
    agent = store.start_agent("cost", name="fresh")
    agent.config["cost_threshold_usd"]  # cached from now on
    ours, theirs = multiprocessing.Pipe()
    writer = multiprocessing.get_context("spawn").Process(target=_write_in_turn, args=(url, samples, theirs))
    writer.start()
    delays = []
    for value in range(1, samples + 1):
        ours.send(None)
        committed = ours.recv()
        while agent.config["cost_threshold_usd"] != value:
            time.sleep(0.0002)
        delays.append(time.time() - committed)
    writer.join()
    store.close()
    delays.sort()
    p50, p99 = delays[len(delays) // 2], delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    print(f"{'config freshness, cross-process':<34} p50 {p50 * 1e3:>8.1f} ms   p99 {p99 * 1e3:>8.1f} ms"
          f"   ({samples} changes; target ≤ 1000 ms)")


def bench_watch(store: optistate.Store, raw: Any, events: int) -> None:
    """Events per second a watcher reads, from a backlog of one statement's changes; and a writer's rate."""
    agent = store.start_agent("cost", name="watched")
    for i in range(events // 100):  # keys to change: one event per row per UPDATE
        agent.config.set(f"key_{i}", 0, config_type="integer")
    start = store.revision()
    cursor = raw.cursor()
    for round_ in range(1, 101):
        cursor.execute("UPDATE agent_configs SET config_value = %s WHERE config_key LIKE 'key_%%'", (str(round_),))
        raw.commit()
    made = store.revision() - start
    began = time.perf_counter()
    read = sum(1 for _ in store.watch(since=start, timeout=0.2))
    took = time.perf_counter() - began - 0.2  # less the quiet time that ends the watch
    began = time.perf_counter()
    for value in range(200):
        agent.config.set("cost_threshold_usd", value + 1)
    written = 200 / (time.perf_counter() - began)
    print(f"{'watch: events read':<34} {read / took:>10,.0f} events/s ({read} of {made})   "
          f"one writer's config.set(): {written:>7,.0f} events/s")


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
    parser.add_argument("--events", type=int, default=20_000, help="the change-log backlog a watch reads")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        base = args.dsn or stack.enter_context(postgres_dsn())
        name = f"bench_{uuid.uuid4().hex[:8]}"
        admin = psycopg2.connect(base)
        admin.autocommit = True
        admin.cursor().execute(f"CREATE DATABASE {name}")
        url = f"{base.rsplit('/', 1)[0]}/{name}"
        try:
            store = stack.enter_context(optistate.connect(url, watch=False))  # no config watch in the counts
            raw = psycopg2.connect(url)
            print(
                f"optistate {optistate.__version__} on {store.database.server_version} (PostgreSQL), "
                f"psycopg2 {psycopg2.__version__.split()[0]}"
            )
            bench_start(store, raw, args.repeat)
            bench_heartbeat(store, raw, args.repeat)
            bench_config(store, raw, args.repeat)
            bench_leases(store, raw, args.repeat)
            bench_freshness(url, 100)
            bench_watch(store, raw, args.events)
            bench_ingest(store, raw, args.points)
            raw.close()
            store.close()
        finally:
            admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
