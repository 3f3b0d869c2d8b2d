"""Every error optistate raises, under one root, :class:`OptistateError`.

Each class carries what went wrong as attributes and formats its own message,
naming the field and the value at fault. A value flagged sensitive is never
formatted into a message: it shows as :data:`MASK`. :func:`one_line` is the
one way to turn any exception, a driver's included, into a message that holds
no row data.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import peewee

__all__ = [
    "MASK",
    "keeps_secrets",
    "one_line",
    "OptistateError",
    "ValidationError",
    "NotFoundError",
    "UnknownAgentType",
    "IntegrityError",
    "ConfigurationError",
    "ConnectionError",
    "MigrationError",
    "PluginError",
    "TransferError",
    "SecretKeyError",
    "LockHeld",
    "LockLost",
    "Conflict",
    "Compacted",
]

MASK = "***"


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line, without the driver's ``DETAIL`` lines.

    PostgreSQL's DETAIL repeats the row at fault ("Failing row contains ..."),
    secrets included, so it never reaches a message.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(line for line in lines if not line.startswith("DETAIL:")) or type(exc).__name__


class OptistateError(Exception):
    """The root of every error optistate raises.

    ``sensitive`` is true when the error is about a sensitive value: its
    message and attributes then hold no copy of it, and :func:`keeps_secrets`
    cuts the exceptions chained to it, which might.
    """

    sensitive = False


F = TypeVar("F", bound=Callable[..., Any])


def keeps_secrets(function: F) -> F:
    """Decorate a function that handles sensitive values: a sensitive :class:`OptistateError`
    leaves it with no ``__cause__`` or ``__context__`` (a driver's or a plugin's exception
    may hold the value whole, as ``UnicodeEncodeError.object`` does)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except OptistateError as exc:
            if exc.sensitive:
                exc.__cause__ = exc.__context__ = None
            raise

    return wrapper  # type: ignore[return-value]


class ValidationError(OptistateError, ValueError):
    """A value that a field does not accept; nothing was stored."""

    def __init__(self, field: str, value: Any, reason: str, *, sensitive: bool = False):
        self.field, self.reason, self.sensitive = field, reason, sensitive
        self.value = MASK if sensitive else value
        super().__init__(f"{field}={MASK if sensitive else repr(value)}: {reason}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class NotFoundError(OptistateError, LookupError):
    """A named thing (agent, config key, capability) that is not stored."""

    def __init__(self, kind: str, key: Any, hint: str = ""):
        self.kind, self.key = kind, key
        super().__init__(f"{kind} {key!r} not found" + (f"; {hint}" if hint else ""))

    @classmethod
    def deleted_agent(cls, name: str, consequence: str = "") -> NotFoundError:
        """For a write through a handle whose agent's row is gone (``import --replace``, ``demo --reset``)."""
        hint = "it was deleted, perhaps by another process"
        return cls("agent", name, f"{hint}; {consequence}" if consequence else hint)


class UnknownAgentType(NotFoundError):
    """An agent type that no loaded plugin registers."""

    def __init__(self, type_name: str, registered: Iterable[str]):
        self.registered = sorted(registered)
        listed = ", ".join(self.registered) or "none"
        super().__init__("agent type", type_name, f"registered types: {listed}")


class IntegrityError(OptistateError, peewee.IntegrityError):
    """A database constraint refused the write (a missing agent, a duplicate key)."""

    @classmethod
    def from_driver(cls, exc: BaseException) -> IntegrityError:
        """The driver's error, as :func:`one_line` shows it."""
        return cls(one_line(exc))


class ConfigurationError(OptistateError, ValueError):
    """A database URL or setting that optistate cannot use."""

    def __init__(self, setting: str, value: Any, reason: str):
        self.setting, self.value = setting, value
        super().__init__(f"{setting}={value!r}: {reason}")


class ConnectionError(OptistateError):
    """The database could not be reached."""

    def __init__(self, url: str, cause: BaseException):
        self.url, self.cause = url, cause
        super().__init__(f"cannot connect to {url}: {str(cause).strip()}")


class MigrationError(OptistateError):
    """A migration could not be applied or reverted."""


class PluginError(OptistateError):
    """A plugin failed to load, or registered something core refuses."""

    def __init__(self, plugin: str, message: str):
        self.plugin = plugin
        super().__init__(f"plugin {plugin!r}: {message}")


class TransferError(OptistateError, ValueError):
    """An import that cannot go ahead; nothing was imported.

    :param line: the 1-based line of the file at fault, if one is.
    """

    def __init__(self, path: str, reason: str, line: int | None = None):
        self.path, self.reason, self.line = path, reason, line
        where = f"{path}, line {line}" if line is not None else path
        super().__init__(f"{where}: {reason}; nothing was imported")


class SecretKeyError(OptistateError, LookupError):
    """A sensitive value stored encrypted that no configured key opens; the message names the key id it needs."""

    sensitive = True

    def __init__(self, config_key: str, key_id: str, reason: str):
        self.config_key, self.key_id, self.reason = config_key, key_id, reason
        super().__init__(f"config {config_key!r} is encrypted with key {key_id}: {reason}")


class LockHeld(OptistateError):
    """Another holder kept the lease on ``resource`` past the time the caller would wait.

    :param holder: the holding agent's name (None if it was freed meanwhile).
    :param expires_at: when that lease ends unless renewed, by the database's clock.
    """

    def __init__(self, resource: str, holder: str | None, expires_at: Any = None):
        self.resource, self.holder, self.expires_at = resource, holder, expires_at
        until = f" until {expires_at.isoformat(timespec='milliseconds')} unless renewed" if expires_at else ""
        super().__init__(f"lock {resource!r}: held by agent {holder!r}{until}")


class LockLost(OptistateError):
    """The lease on ``resource`` with fencing ``token`` is no longer held: it expired, was released or taken."""

    def __init__(self, resource: str, token: int, reason: str = "expired, released or taken by another holder"):
        self.resource, self.token, self.reason = resource, token, reason
        super().__init__(f"lock {resource!r} (token {token}): lost; {reason}")


class Conflict(OptistateError):
    """A compare-and-set whose expected revision is not the stored one; nothing was stored.

    :param what: the thing written, e.g. ``config 'cost_threshold_usd'``.
    :param expected: the ``expect_revision`` given (0: the thing must not exist yet).
    :param current: its revision now (0: it does not exist).
    """

    def __init__(self, what: str, expected: int, current: int):
        self.what, self.expected, self.current = what, expected, current
        super().__init__(f"expect_revision={expected}: {what} is at revision {current}; nothing was stored")


class Compacted(OptistateError, LookupError):
    """A watch or read from a revision whose later events were compacted away.

    :param since: the revision asked for (events after it were wanted).
    :param oldest: the oldest revision still kept; resume from ``oldest - 1`` after re-reading the state.
    """

    def __init__(self, since: int, oldest: int):
        self.since, self.oldest = since, oldest
        super().__init__(
            f"since={since}: events up to revision {oldest - 1} were compacted; the oldest kept is {oldest}"
        )
