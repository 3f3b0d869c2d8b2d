"""How each cost of optistate grows with the data and the fleet, on a throwaway PostgreSQL, in one run.

    python bench/scale.py            # the full run: 10M metric rows, 100,000 agents, 200 heartbeating agents
    python bench/scale.py --quick    # the same measurements, small, in under a minute (CI's smoke test)

It starts its own PostgreSQL and a PgBouncer in transaction mode in front of
it (:mod:`optistate.testing`), fills the big tables with server-side SQL
(``INSERT … SELECT generate_series``), never through the SDK, and prints one
table. Absolute times on a shared machine are noise, so each figure comes
with a ratio measured in the same run: against the curve's first point,
against raw psycopg2 sending the same SQL, or against the alternative the
issue names (a plain DELETE, a sequential scan, direct connections). The
targets are printed beside the figures; nothing here asserts them.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import psycopg2

import optistate
from optistate.fields import utcnow
from optistate.metrics import COLUMNS, COPY_ESCAPES
from optistate.partitions import ensure_partitions
from optistate.testing import pgbouncer, postgres_server, run_together


class Scale(NamedTuple):
    """The sizes of one run."""

    metric_rows: tuple[int, ...]  # rows agent_metrics holds when the ingest rate is measured
    ingest_points: int  # points one ingest measurement flushes
    retention_rows: int  # rows of the day that retention removes
    search_rows: int  # rows the metadata search runs over: one of metric_rows
    agents: tuple[int, ...]  # agents registered when start_agent is measured
    starts: int  # start_agent calls per measurement
    processes: int  # heartbeat: processes
    threads: int  # heartbeat: agents (threads) per process
    beats: int  # heartbeat: calls per agent
    repeat: int  # samples of each search


FULL = Scale((0, 1_000_000, 10_000_000), 50_000, 1_000_000, 1_000_000, (10, 10_000, 100_000), 300, 4, 50, 100, 30)
QUICK = Scale((0, 20_000, 100_000), 5_000, 20_000, 20_000, (10, 1_000, 5_000), 30, 2, 10, 10, 5)
AGENT_BATCH = 1_000
"""Agents one filling transaction registers (see :func:`fill_agents`)."""
WARM_UP = 5
"""start_agent calls before each timed series."""
FILL_BATCH = 1_000_000
"""Rows one filling INSERT writes: a long fill is several transactions, not one."""


class Row(NamedTuple):
    measure: str
    at: str
    value: str
    compared: str
    target: str


def quantile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@contextmanager
def database(server_url: str) -> Iterator[str]:
    """A new database on the server, dropped afterwards; yields its name."""
    name = f"scale_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def url_of(base: str, name: str) -> str:
    return f"{base.rsplit('/', 1)[0]}/{name}"


def run_sql(url: str, statement: str, params: Any = None) -> None:
    """Run one statement on a connection of its own, in autocommit (VACUUM refuses a transaction)."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement, params)
    finally:
        conn.close()


def fill_metrics(url: str, agent_id: str, first: int, last: int, since: datetime, span: timedelta) -> None:
    """Rows ``first..last`` of one agent's points, spread evenly over ``[since, since + span)``, by the server.

    Metadata ``tag`` has 1,000 values (0.1% each) and ``group`` 10 (10% each). Ends with ``VACUUM ANALYZE``,
    the state autovacuum reaches: before it, each partition's GIN index still holds the new rows in its
    unsorted pending list, which every search reads whole (~20 ms at a million rows, measured once).
    """
    for start in range(first, last + 1, FILL_BATCH):
        run_sql(url, "INSERT INTO agent_metrics (agent_id, metric_name, metric_value, metric_unit, metric_type,"
            " metadata, collection_timestamp) SELECT %(agent)s, 'gpu_utilization', i %% 100, 'percent', 'gauge',"
            " jsonb_build_object('tag', 't' || (i %% 1000), 'group', 'g' || (i %% 10), 'region', 'us-west'),"
            " %(since)s + %(span)s * ((i %% %(rows)s)::float8 / %(rows)s) FROM generate_series(%(a)s, %(b)s) AS i",
            {"agent": agent_id, "since": since, "span": span, "rows": last, "a": start,
             "b": min(last, start + FILL_BATCH - 1)})
    run_sql(url, "VACUUM ANALYZE agent_metrics")


def ingest(url: str, agent: Any, points: int) -> tuple[float, float]:
    """Rows per second of one flush of ``points`` points through optistate, and of raw COPY of as many."""
    agent.buffer.size = points + 1  # one flush, as the raw side does one COPY
    start = time.perf_counter()
    for i in range(points):
        agent.record_metric("gpu_utilization", i * 0.01, "percent", "gauge", {"region": "us-east", "gpu": i % 8})
    agent.flush()
    ours = time.perf_counter() - start
    now, out = utcnow(), io.StringIO()
    start = time.perf_counter()
    for i in range(points):
        row = (uuid.uuid4(), agent.id, "gpu_utilization", i * 0.01, "percent", "gauge",
               json.dumps({"region": "us-east", "gpu": i % 8}), now)
        out.write("\t".join(str(v).translate(COPY_ESCAPES) for v in row) + "\n")
    out.seek(0)
    raw = psycopg2.connect(url)
    with raw, raw.cursor() as cursor:
        cursor.copy_expert(f"COPY agent_metrics ({', '.join(COLUMNS)}) FROM STDIN", out)
    raw.close()
    return points / ours, points / (time.perf_counter() - start)


def bench_ingest_and_search(base: str, scale: Scale, rows: list[Row]) -> None:
    with database(base) as name, optistate.connect(url_of(base, name)) as store:
        url = url_of(base, name)
        agent = store.start_agent("performance", name="ingest")
        now, filled, first_rate = utcnow(), 0, 0.0
        since, span = now - timedelta(days=6), timedelta(days=6)  # within the prepared partitions
        ensure_partitions(store.database, since, now)
        for level in scale.metric_rows:
            if level > filled:
                fill_metrics(url, str(agent.id), filled + 1, level, since, span)
                filled = level
            ours, copy = ingest(url, agent, scale.ingest_points)
            first_rate = first_rate or ours
            rows.append(Row("ingest (rows/s)", f"{level:,} rows", f"{ours:,.0f}",
                            f"{ours / first_rate:.2f} of 0 rows; {ours / copy:.2f} of COPY", "flat within 20%"))
            if level == scale.search_rows:
                search(agent, url, scale, level, rows)


def search(agent: Any, url: str, scale: Scale, level: int, rows: list[Row]) -> None:
    """Metadata containment: selective (0.1%) through the SDK and raw; 10% against a forced sequential scan."""
    raw = psycopg2.connect(url)
    cursor = raw.cursor()

    def run(query: Any, seqscan: bool = False) -> float:
        text, params = query.sql()
        with raw:
            if seqscan:
                cursor.execute("SET LOCAL enable_bitmapscan = off; SET LOCAL enable_indexscan = off")
            start = time.perf_counter()
            cursor.execute(text, params)
            cursor.fetchall()
            return time.perf_counter() - start

    reader = agent.metric_reader
    model = reader.model
    for label, where in (("0.1%", {"tag": "t7"}), ("10%", {"group": "g3"})):
        query = reader.select(None, None, None, where).order_by(model.collection_timestamp, model.metric_name)
        planned = statistics.median(run(query) for _ in range(scale.repeat))
        if label == "0.1%":
            sdk = statistics.median(timed(lambda w=where: agent.metrics(where=w)) for _ in range(scale.repeat))
            rows.append(Row("metadata search 0.1% (p50)", f"{level:,} rows", ms(sdk),
                            f"SQL alone {ms(planned)} ({sdk / planned:.2f}x)", "≤ 5 ms"))
        else:
            scan = statistics.median(run(query, seqscan=True) for _ in range(scale.repeat))
            rows.append(Row("metadata search 10%, SQL (p50)", f"{level:,} rows", ms(planned),
                            f"seq scan {ms(scan)} ({planned / scan:.2f}x)", "≤ seq scan"))
    raw.close()


def bench_retention(base: str, scale: Scale, rows: list[Row]) -> None:
    """One day of rows: a plain DELETE of it (then VACUUM), then the same rows again and retain()."""
    with database(base) as name, optistate.connect(url_of(base, name)) as store:
        url = url_of(base, name)
        agent = store.start_agent("performance", name="retention")
        day = utcnow().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=5)
        ensure_partitions(store.database, day, day)
        conn = psycopg2.connect(url)
        conn.autocommit = True
        cursor = conn.cursor()
        fill_metrics(url, str(agent.id), 1, scale.retention_rows, day, timedelta(days=1))
        delete = timed(lambda: cursor.execute("DELETE FROM agent_metrics WHERE collection_timestamp < %s",
                                              (day + timedelta(days=1),)))
        vacuum = timed(lambda: cursor.execute("VACUUM agent_metrics"))
        fill_metrics(url, str(agent.id), 1, scale.retention_rows, day, timedelta(days=1))
        window = utcnow() - (day + timedelta(days=1)) - timedelta(minutes=1)  # the cutoff just after that day
        start = time.perf_counter()
        done = store.retain(metrics=window)
        retain = time.perf_counter() - start
        cursor.execute("SELECT count(*) FROM agent_metrics")
        left = cursor.fetchone()[0]
        conn.close()
        rows.append(Row("retention of one day: retain()", f"{scale.retention_rows:,} rows", ms(retain),
                        f"DELETE {ms(delete)} ({retain / delete:.3f}x), +VACUUM {ms(vacuum)}",
                        f"dropped {len(done.dropped_partitions)} partition(s), {left} rows left"))


def fill_agents(url: str, template: str, first: int, last: int) -> None:
    """Agents ``fleet-first..fleet-last`` of type cost, each with the template agent's configs, capabilities, state.

    ``AGENT_BATCH`` agents per transaction, as a fleet registers over time rather than in one statement.
    """
    conn = psycopg2.connect(url)
    with conn.cursor() as cursor:
        columns = {}
        for table in ("agent_configs", "agent_capabilities", "agent_states"):
            cursor.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s"
                           " AND column_name NOT IN ('id', 'agent_id', 'revision')", (table,))
            columns[table] = [row[0] for row in cursor.fetchall()]
        for start in range(first, last + 1, AGENT_BATCH):
            end = min(last, start + AGENT_BATCH - 1)
            with conn:
                cursor.execute("INSERT INTO agents (type, name, version) SELECT 'cost', 'fleet-' || i, '1.0.0'"
                               " FROM generate_series(%s, %s) AS i", (start, end))
                for table, names in columns.items():
                    cursor.execute(f"INSERT INTO {table} (agent_id, {', '.join(names)})"
                                   f" SELECT a.id, {', '.join('t.' + c for c in names)} FROM {table} t,"
                                   " generate_series(%s, %s) AS i JOIN agents a ON a.type = 'cost'"
                                   " AND a.name = 'fleet-' || i WHERE t.agent_id = %s", (start, end, template))
    conn.close()
    run_sql(url, "ANALYZE")


def bench_start_agent(base: str, scale: Scale, rows: list[Row]) -> None:
    # watch=False: the fill's events, hundreds of thousands in seconds, would otherwise be read by this
    # store's config watch while start_agent is timed; a fleet registering over time spreads them out.
    with database(base) as name, optistate.connect(url_of(base, name), watch=False) as store:
        url = url_of(base, name)
        template = str(store.start_agent("cost", name="template").id)
        registered, first = 1, 0.0
        for level in scale.agents:
            fill_agents(url, template, registered, level - 1)  # with the template: `level` agents
            registered = level
            for i in range(WARM_UP):  # the first calls at a size fill caches: untimed
                store.start_agent("cost", name=f"warm-{level}-{i}")
            samples = [timed(lambda i=i, at=level: store.start_agent("cost", name=f"new-{at}-{i}"))
                       for i in range(scale.starts)]
            registered += WARM_UP + scale.starts
            p50 = statistics.median(samples)
            first = first or p50
            rows.append(Row("start_agent, new agent (p50)", f"{level:,} agents", ms(p50),
                            f"{p50 / first:.2f}x of {scale.agents[0]} agents", "flat"))


def heartbeats(url: str, threads: int, beats: int) -> list[float]:
    """In one process: ``threads`` agents, each in its own thread with its own connection, heartbeat ``beats``
    times; return every call's seconds. Run in several processes at once by :func:`bench_heartbeat`."""
    with optistate.connect(url, migrate=False) as store:
        agents = [store.start_agent("cost", name=f"hb-{os.getpid()}-{i}") for i in range(threads)]
        barrier, lock, latencies = threading.Barrier(threads), threading.Lock(), []

        def beat(agent: Any) -> None:
            agent.heartbeat()  # opens this thread's connection, untimed
            barrier.wait()
            mine = [timed(agent.heartbeat) for _ in range(beats)]
            store.database.close()
            with lock:
                latencies.extend(mine)

        running = [threading.Thread(target=beat, args=(agent,)) for agent in agents]
        for thread in running:
            thread.start()
        for thread in running:
            thread.join()
    return latencies


def bench_heartbeat(base: str, pooled: str, scale: Scale, rows: list[Row]) -> None:
    fleet = scale.processes * scale.threads
    with database(base) as name:
        optistate.connect(url_of(base, name)).close()  # migrated once, before the processes start
        found = {}
        for label, url in (("direct", url_of(base, name)), ("PgBouncer", url_of(pooled, name))):
            outcomes = run_together(heartbeats, (url, scale.threads, scale.beats), scale.processes)
            failed = [detail for kind, detail in outcomes if kind != "ok"]
            if failed:
                raise RuntimeError(f"heartbeat through {label} failed: {failed[0]}")
            found[label] = [s for _, latencies in outcomes for s in latencies]
        direct = found["direct"]
        for label, latencies in found.items():
            p50, p99 = quantile(latencies, 0.5), quantile(latencies, 0.99)
            rows.append(Row(f"heartbeat, {fleet} agents, {label}", "p50 / p99", f"{ms(p50)} / {ms(p99)}",
                            f"{p50 / quantile(direct, 0.5):.2f}x / {p99 / quantile(direct, 0.99):.2f}x of direct",
                            "pooler vs direct"))


def machine(server_version: str) -> str:
    with open("/proc/cpuinfo") as cpus:
        model = next((line.split(":", 1)[1].strip() for line in cpus if line.startswith("model name")),
                     platform.processor() or "unknown CPU")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{when}; {os.cpu_count()} CPUs ({model}), {memory:.1f} GiB RAM; PostgreSQL {server_version}"
            f" (throwaway, fsync off); Python {platform.python_version()}; optistate {optistate.__version__}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute; for CI's smoke test")
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else FULL
    rows: list[Row] = []
    with ExitStack() as stack:
        server = stack.enter_context(postgres_server(max_connections=scale.processes * scale.threads + 50))
        pooled = stack.enter_context(pgbouncer(server.url))
        conn = psycopg2.connect(server.url)
        version = conn.server_version
        conn.close()
        print(machine(f"{version // 10000}.{version % 10000}"), flush=True)
        for step in (bench_ingest_and_search, bench_retention, bench_start_agent):
            step(server.url, scale, rows)
        bench_heartbeat(server.url, pooled, scale, rows)
    widths = [max(len(r[i]) for r in [Row(*Row._fields), *rows]) for i in range(len(Row._fields))]
    for row in [Row(*Row._fields), Row(*("-" * w for w in widths)), *rows]:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
