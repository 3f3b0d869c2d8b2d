"""Metric commands' pieces: the ``--every``/``--metrics`` duration type and ``optistate retain``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click

from .cli_support import Session, echo_json, json_option, pass_session
from .errors import ValidationError
from .timeseries import parse_duration

__all__ = ["Duration", "retain"]


class Duration(click.ParamType):
    """``30s``, ``5m``, ``1h``, ``1d``: a positive timedelta; anything else is a usage error naming it."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return parse_duration(param.name if param and param.name else "duration", value)
        except ValidationError as exc:
            self.fail(f"{value!r} {exc.reason}", param, ctx)


@click.command()
@click.option("--metrics", "window", type=Duration(), required=True,
              help="Keep the metric points of this last stretch (30d, 12h); delete older ones.")
@json_option
@pass_session
def retain(session: Session, window: timedelta, as_json: bool) -> None:
    """Delete metric points older than --metrics.

    PostgreSQL drops whole partitions that end at or before the cutoff
    (now minus --metrics) and deletes the default partition's older points;
    SQLite deletes every older point in batches. Nothing at or after the
    cutoff is deleted. Safe while agents write.

    \b
    optistate retain --metrics 30d
    """
    done = session.store().retain(metrics=window)
    if as_json:
        echo_json({"cutoff": done.cutoff.isoformat(), "dropped_partitions": done.dropped_partitions,
                   "deleted_rows": done.deleted_rows})
        return
    click.echo(f"cutoff {done.cutoff.isoformat()}: dropped {len(done.dropped_partitions)} partitions,"
               f" deleted {done.deleted_rows} points")
