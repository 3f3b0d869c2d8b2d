"""Semantic-version ranges such as ``">=2.0"``, ``">=1.2,<2"``, ``"^1.4"`` or ``"~2.1.0"``.

Comparators are separated by commas or spaces and must all hold. Partial
versions fill in zeros (``2.0`` is ``2.0.0``). Precedence, pre-releases
included, is the ``semver`` package's.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable

from semver import Version

from .errors import ValidationError

__all__ = ["highest", "matches"]

_COMPARATOR = re.compile(r"^(>=|<=|==|!=|>|<|=|\^|~)?\s*(\d+(?:\.\d+){0,2}(?:[-+][0-9A-Za-z.+-]*)?)$")
_OPS: dict[str, Callable[[Version, Version], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "=": operator.eq,
    "": operator.eq,
    "!=": operator.ne,
}


def _bound(op: str, text: str, spec: str) -> Callable[[Version], bool]:
    try:
        base = Version.parse(text, optional_minor_and_patch=True)
    except ValueError:
        raise ValidationError("version range", spec, f"{text!r} is not a version") from None
    if op == "^":  # same left-most non-zero part
        upper = base.bump_major() if base.major else base.bump_minor() if base.minor else base.bump_patch()
        return lambda v: base <= v < upper
    if op == "~":  # same major.minor
        upper = base.bump_minor()
        return lambda v: base <= v < upper
    compare = _OPS[op]
    return lambda v: compare(v, base)


def _parse(spec: str) -> list[Callable[[Version], bool]]:
    parts = [p for p in re.split(r"[,\s]+(?![\d.])|,", spec.strip()) if p.strip()]
    if not parts:
        raise ValidationError("version range", spec, "is empty")
    checks = []
    for part in parts:
        found = _COMPARATOR.match(part.strip())
        if not found:
            raise ValidationError("version range", spec, f"cannot read {part.strip()!r}")
        checks.append(_bound(found.group(1) or "", found.group(2), spec))
    return checks


def matches(version: str, spec: str) -> bool:
    """Whether ``version`` satisfies every comparator in ``spec``."""
    checks = _parse(spec)
    parsed = Version.parse(version)
    return all(check(parsed) for check in checks)


def highest(versions: Iterable[str], spec: str | None = None) -> str | None:
    """The highest of ``versions`` that satisfies ``spec`` (any, if None), or None."""
    checks = _parse(spec) if spec else []
    best: Version | None = None
    for text in versions:
        parsed = Version.parse(text)
        if all(check(parsed) for check in checks) and (best is None or parsed > best):
            best = parsed
    return str(best) if best is not None else None
