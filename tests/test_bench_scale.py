"""``bench/scale.py --quick`` runs every measurement end to end: a smoke test, with no timing asserted.

Slow and PostgreSQL-only, so it runs in the py311-postgres tox cell alone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "scale.py"
MEASURES = ("ingest (rows/s)", "metadata search 0.1%", "metadata search 10%", "retention of one day: retain()",
            "start_agent, new agent", "heartbeat, 20 agents, direct", "heartbeat, 20 agents, PgBouncer")


@pytest.mark.slow
@pytest.mark.postgres
def test_scale_quick_prints_every_measure(pg_server, tmp_path):  # pg_server: skips, or fails in CI, without PostgreSQL
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    for measure in MEASURES:
        assert any(line.startswith(f"| {measure}") for line in table), (measure, done.stdout)
    assert sum(line.startswith("| ingest (rows/s)") for line in table) == 3  # one per size of agent_metrics
    assert "0 rows left" in done.stdout  # retain() removed the whole day
    assert "PostgreSQL 1" in done.stdout.splitlines()[0]  # the machine line names the server
