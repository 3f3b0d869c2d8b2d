"""Metric charts for the dashboard, drawn as SVG on the server (no JavaScript, nothing to build).

A chart is a line through time buckets, ``[(bucket_start, value), ...]`` as
``agent.aggregate(..., every=)`` returns them, over a fixed window: the x axis
is the window, so gaps and a lone point show where they fall. Each bucket is
also a dot whose tooltip gives its time and value.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple
from xml.sax.saxutils import escape, quoteattr

__all__ = ["WINDOWS", "Window", "svg_chart"]

WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 640, 180, 64, 12, 12, 28


class Window(NamedTuple):
    """A chart's time span and its bucket width: a few hundred buckets at most, whatever the points."""

    span: timedelta
    every: timedelta


WINDOWS = {  # buckets start on whole widths from the epoch: one more, partial, where the window starts mid-bucket
    "1h": Window(timedelta(hours=1), timedelta(seconds=15)),  # 240 buckets
    "24h": Window(timedelta(hours=24), timedelta(minutes=5)),  # 288
    "7d": Window(timedelta(days=7), timedelta(minutes=30)),  # 336
}


def _number(value: float) -> str:
    return f"{value:.6g}"


def svg_chart(
    title: str, buckets: Sequence[tuple[datetime, float]], since: datetime, until: datetime, unit: str | None
) -> str:
    """An ``<svg>`` element drawing ``buckets`` between ``since`` and ``until``; every text in it is escaped."""
    label = f"{title} ({unit})" if unit else title
    head = (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label={quoteattr(label)} '
        f'data-buckets="{len(buckets)}" xmlns="http://www.w3.org/2000/svg">'
    )
    inner_width, inner_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    frame = f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{inner_width}" height="{inner_height}"/>'
    if not buckets:
        empty = f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no points</text>'
        return f"{head}{frame}{empty}</svg>"
    values = [value for _, value in buckets]
    low, high = min(values), max(values)
    if low == high:  # a flat line sits in the middle
        low, high = low - 1, high + 1
    span = (until - since).total_seconds() or 1.0

    def x(at: datetime) -> float:
        return LEFT + inner_width * min(max((at - since).total_seconds() / span, 0.0), 1.0)

    def y(value: float) -> float:
        return TOP + inner_height * (1 - (value - low) / (high - low))

    coordinates = [(x(at), y(value)) for at, value in buckets]
    line = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coordinates)
    dots = "".join(
        f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2.5"><title>{escape(at.isoformat(timespec="seconds"))}: '
        f"{_number(value)}</title></circle>"
        for (cx, cy), (at, value) in zip(coordinates, buckets, strict=True)
    )
    axes = (
        f'<text x="{LEFT - 6}" y="{TOP + 10}" text-anchor="end">{_number(high)}</text>'
        f'<text x="{LEFT - 6}" y="{HEIGHT - BOTTOM}" text-anchor="end">{_number(low)}</text>'
        f'<text x="{LEFT}" y="{HEIGHT - 8}">{escape(since.strftime("%Y-%m-%d %H:%M"))} UTC</text>'
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end">{escape(until.strftime("%Y-%m-%d %H:%M"))}'
        " UTC</text>"
    )
    return f'{head}{frame}{axes}<polyline class="line" points="{line}"/>{dots}</svg>'
