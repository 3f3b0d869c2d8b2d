"""The five agent tables, as peewee models that are not welded to any database.

The classes here have no database of their own. Bind them to the one you
choose, as with any peewee library::

    db.bind(MODELS)                  # or: with db.bind_ctx(MODELS): ...

:func:`optistate.connect` does that bind for you, so after it
``AgentConfig.select()`` queries the store's database. With two stores in one
process, the classes here follow the store connected last, while each store's
own API (and ``store.models``) always uses that store's database: see
:func:`bound_models`.

The schema itself is created by the migrations in ``migrations/``, never by
``create_tables()``: the database owns the cascades, unique constraints,
``updated_at`` triggers and (on PostgreSQL) the GIN indexes.
"""

from __future__ import annotations

import enum
import json
import uuid
from types import SimpleNamespace
from typing import Any

import peewee

from .encryption import Keyring, sealed_key_id
from .errors import MASK, IntegrityError, ValidationError, keeps_secrets
from .fields import (
    MAX_JSON_DEPTH,
    ChoiceField,
    FiniteFloatField,
    IntegerField,
    JSONField,
    SemverField,
    StringField,
    TextField,
    TimestampField,
    check_chars,
    check_choice,
    check_json,
    check_number,
    utcnow,
)

__all__ = [
    "Agent",
    "AgentCapability",
    "AgentConfig",
    "AgentMetric",
    "AgentState",
    "AgentStatus",
    "ConfigType",
    "MetricType",
    "MODELS",
    "agent_exists",
    "bound_models",
    "parse_config_value",
    "format_config_value",
]


class ConfigType(str, enum.Enum):
    """How an ``agent_configs.config_value`` string is parsed.

    ``number`` keeps whole numbers as ``int``, every digit exact, and the rest
    as ``float``. Numbers of either type lie within a double's range (±1.8e308).
    """

    STRING = "string"
    INTEGER = "integer"
    FLOAT = "float"
    NUMBER = "number"
    BOOLEAN = "boolean"
    JSON = "json"


class AgentStatus(str, enum.Enum):
    """An agent's status, both as registered (``agents``) and at run time (``agent_states``)."""

    IDLE = "idle"
    ACTIVE = "active"
    BUSY = "busy"
    PROCESSING = "processing"
    WAITING = "waiting"
    ERROR = "error"
    OFFLINE = "offline"


class MetricType(str, enum.Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@keeps_secrets
def parse_config_value(config_type: str, text: str, *, key: str = "config_value", sensitive: bool = False) -> Any:
    """The Python value of a stored ``config_value`` string of ``config_type``."""
    ctype = ConfigType(config_type)
    try:
        if ctype is ConfigType.STRING:
            return text
        if ctype is ConfigType.INTEGER:
            return int(text)
        if ctype is ConfigType.FLOAT:
            return float(text)
        if ctype is ConfigType.NUMBER:
            try:
                return int(text)  # a whole number stays exact: float("12345678901234567890") would not
            except ValueError:
                return float(text)
        if ctype is ConfigType.BOOLEAN:
            lowered = text.strip().lower()
            if lowered in _TRUE or lowered in _FALSE:
                return lowered in _TRUE
            raise ValueError("not a boolean")
        return json.loads(text)
    except RecursionError:
        reason = f"is nested deeper than {MAX_JSON_DEPTH} levels"
        raise ValidationError(key, text, reason, sensitive=sensitive) from None
    except (TypeError, ValueError):
        raise ValidationError(key, text, f"does not parse as {ctype.value}", sensitive=sensitive) from None


@keeps_secrets
def format_config_value(config_type: str, value: Any, *, key: str = "config_value", sensitive: bool = False) -> str:
    """The canonical stored string for ``value`` as ``config_type``; refuses what does not fit.

    Strings are parsed first (``"5000"`` as an integer is ``5000``), so the
    stored text is always one that :func:`parse_config_value` reads back.
    """
    ctype = ConfigType(check_choice("config_type", config_type, ConfigType))
    if ctype is ConfigType.STRING:
        if not isinstance(value, str):
            raise ValidationError(key, value, "must be a string", sensitive=sensitive)
        return check_chars(key, value, sensitive=sensitive)
    if ctype is ConfigType.JSON:
        if isinstance(value, str):
            check_json(key, parse_config_value(ctype, value, key=key, sensitive=sensitive), sensitive=sensitive)
            return value
        return check_json(key, value, sensitive=sensitive)
    if isinstance(value, str):
        value = parse_config_value(ctype, value, key=key, sensitive=sensitive)
    if ctype is ConfigType.BOOLEAN:
        if not isinstance(value, bool):
            raise ValidationError(key, value, "must be a boolean", sensitive=sensitive)
        return "true" if value else "false"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(key, value, f"must be {ctype.value}", sensitive=sensitive)
    number = check_number(key, value, sensitive=sensitive)
    if ctype is ConfigType.INTEGER:
        if isinstance(number, float) and not number.is_integer():
            raise ValidationError(key, value, "must be a whole number", sensitive=sensitive)
        return str(int(number))
    if ctype is ConfigType.NUMBER and isinstance(number, int):
        return str(number)
    return repr(float(number))


class BaseModel(peewee.Model):
    """UUID primary key; ``save()`` inserts a new row and updates a loaded one.

    peewee cannot tell a new row from a stored one when the key is a UUID
    made in Python, so a row built by hand is inserted on its first
    ``save()``, and a row read from the database is updated. Integrity
    errors are raised as :class:`optistate.errors.IntegrityError`.
    """

    id = peewee.UUIDField(primary_key=True, default=uuid.uuid4)

    def __init__(self, *args: Any, **kwargs: Any):
        self._stored = bool(kwargs.get("__no_default__"))
        super().__init__(*args, **kwargs)

    def save(self, force_insert: bool = False, only: Any = None) -> Any:
        try:
            saved = super().save(force_insert=force_insert or not self._stored, only=only)
        except peewee.IntegrityError as exc:
            raise IntegrityError.from_driver(exc) from None
        self._stored = True
        return saved


class Timestamped(BaseModel):
    """``created_at``, ``updated_at`` and ``revision``, which database triggers keep.

    A trigger moves ``updated_at`` on any UPDATE, and sets ``revision`` to the
    change log's revision of the row's last change (see :mod:`optistate.events`).
    """

    created_at = TimestampField(default=utcnow)
    updated_at = TimestampField(default=utcnow)
    revision = peewee.BigIntegerField(default=0)

    def save(self, force_insert: bool = False, only: Any = None) -> Any:
        if self._stored and not force_insert:
            self.updated_at = utcnow()
        return super().save(force_insert=force_insert, only=only)


class Agent(Timestamped):
    """A registered agent process, unique by ``(type, name)``."""

    type = StringField(max_length=64)
    name = StringField(max_length=255)
    version = StringField(max_length=64)
    status = ChoiceField(AgentStatus, default=AgentStatus.ACTIVE.value)
    endpoint = StringField(max_length=1024, null=True)
    last_heartbeat = TimestampField(default=utcnow)
    ttl_seconds = peewee.FloatField(default=30.0)  # alive while the heartbeat is younger, by the database's clock

    class Meta:
        table_name = "agents"
        indexes = ((("type", "name"), True),)

    @property
    def state(self) -> AgentState | None:
        """The agent's one state row, or None before it has one."""
        return self._states.first()  # type: ignore[attr-defined]

    def __str__(self) -> str:
        """``cost/Cost Optimizer 1.0.0 (active)``: peewee's repr of every model is ``<Class: str(row)>``.

        That repr is made for each class, bound subclasses included, so the
        models name their rows in ``__str__``, never in ``__repr__``.
        """
        return f"{self.type}/{self.name} {self.version} ({self.status})"


class AgentConfig(Timestamped):
    """One typed setting; ``config_value`` is the stored string, :attr:`value` the parsed one.

    A sensitive value stored encrypted (see :mod:`optistate.encryption`) keeps its
    ciphertext in ``config_value``; :attr:`text` and :attr:`value` open it with
    :attr:`keyring`: the store's keys on ``store.models.AgentConfig`` (and so on the
    rows of ``agent.config``), none on this unbound class.
    """

    agent = peewee.ForeignKeyField(Agent, backref="configs", on_delete="CASCADE")
    config_key = StringField(max_length=255)
    config_value = TextField(masked=True)
    config_type = ChoiceField(ConfigType, default=ConfigType.STRING.value)
    description = TextField(null=True)
    is_sensitive = peewee.BooleanField(default=False)

    keyring = Keyring()  # not a column: the keys that open and encrypt values (see bound_models)
    _opened: tuple[str, str] | None = None  # (stored, plain): a value is decrypted once per row

    class Meta:
        table_name = "agent_configs"
        indexes = ((("agent", "config_key"), True),)

    @property
    def text(self) -> str:
        """The canonical string in plain text, decrypted if stored encrypted.

        :raises SecretKeyError: encrypted with a key that :attr:`keyring` lacks.
        """
        stored = self.config_value
        if self._opened is None or self._opened[0] != stored:
            self._opened = (stored, self.keyring.open(stored, key=self.config_key) if self.is_encrypted else stored)
        return self._opened[1]

    @property
    def value(self) -> Any:
        """:attr:`text` parsed as ``config_type``."""
        return parse_config_value(self.config_type, self.text, key=self.config_key, sensitive=self.is_sensitive)

    @property
    def key_id(self) -> str | None:
        """The id of the key a sensitive value is encrypted with; None when it is stored in plain text."""
        return sealed_key_id(self.config_value) if self.is_sensitive else None

    @property
    def is_encrypted(self) -> bool:
        return self.key_id is not None

    @keeps_secrets
    def save(self, force_insert: bool = False, only: Any = None) -> Any:
        """Store the row; a sensitive value is encrypted first when :attr:`keyring` has a key."""
        if not self.is_encrypted:
            key, sensitive = self.config_key, self.is_sensitive
            text = format_config_value(self.config_type, self.config_value, key=key, sensitive=sensitive)
            self.config_value = self.keyring.stored_form(text, key=key, sensitive=sensitive)
        return super().save(force_insert=force_insert, only=only)

    def __str__(self) -> str:
        """``api_token=*** (string)``, ``max_pages=100 (integer)``: sensitive values masked, strings quoted."""
        text = self.config_value
        shown = MASK if self.is_sensitive else repr(text) if self.config_type == ConfigType.STRING.value else text
        return f"{self.config_key}={shown} ({self.config_type})"


class AgentState(Timestamped):
    """The one run-time state row of an agent."""

    agent = peewee.ForeignKeyField(Agent, backref="_states", on_delete="CASCADE", unique=True)
    status = ChoiceField(AgentStatus, default=AgentStatus.IDLE.value)
    current_workflow = StringField(max_length=255, null=True)
    workflow_data = JSONField(shape=dict, default=dict)
    resource_locks = JSONField(shape=list, item=str, default=list)
    error_count = IntegerField(default=0)
    last_error = JSONField(shape=dict, null=True)
    last_heartbeat = TimestampField(default=utcnow)
    resource_usage = JSONField(shape=dict, default=dict)
    metadata = JSONField(shape=dict, default=dict)

    class Meta:
        table_name = "agent_states"

    def __str__(self) -> str:
        """``error, workflow 'quality_check', 1 error``."""
        workflow = f", workflow {self.current_workflow!r}" if self.current_workflow else ""
        errors = f", {self.error_count} error{'' if self.error_count == 1 else 's'}" if self.error_count else ""
        return f"{self.status}{workflow}{errors}"


class AgentCapability(Timestamped):
    """One version of one capability; several versions of a name may coexist."""

    agent = peewee.ForeignKeyField(Agent, backref="capabilities", on_delete="CASCADE")
    capability_name = StringField(max_length=255)
    capability_version = SemverField(default="1.0.0")
    description = TextField(null=True)
    parameters = JSONField(shape=dict, default=dict)
    is_enabled = peewee.BooleanField(default=True)

    class Meta:
        table_name = "agent_capabilities"
        indexes = ((("agent", "capability_name", "capability_version"), True),)

    def __str__(self) -> str:
        return f"{self.capability_name} {self.capability_version} ({'enabled' if self.is_enabled else 'disabled'})"


class AgentMetric(BaseModel):
    """One time-series point."""

    agent = peewee.ForeignKeyField(Agent, backref="metrics", on_delete="CASCADE")
    metric_name = StringField(max_length=255)
    metric_value = FiniteFloatField()
    metric_unit = StringField(max_length=64, null=True)
    metric_type = ChoiceField(MetricType, default=MetricType.GAUGE.value)
    metadata = JSONField(shape=dict, default=dict)
    collection_timestamp = TimestampField(default=utcnow)

    class Meta:
        table_name = "agent_metrics"

    def __str__(self) -> str:
        """``gpu_utilization=78.5 percent at 2025-01-31T12:00:00+00:00``."""
        unit = f" {self.metric_unit}" if self.metric_unit else ""
        stamp = self.collection_timestamp
        return f"{self.metric_name}={self.metric_value}{unit} at {stamp.isoformat() if stamp else None}"


MODELS: tuple[type[BaseModel], ...] = (Agent, AgentConfig, AgentState, AgentCapability, AgentMetric)


def agent_exists(child: Any, agent_id: Any) -> bool:
    """Whether agent ``agent_id`` still has its row, asked through ``child``, a bound model with an ``agent`` key.

    A write that changed nothing, or that a foreign key refused, asks this to tell "the agent was deleted" apart.
    """
    agent = child.agent.rel_model
    return bool(agent.select().where(agent.id == agent_id).exists())


def bound_models(database: peewee.Database, keyring: Keyring | None = None) -> SimpleNamespace:
    """Subclasses of the five models bound to ``database`` alone; their ``AgentConfig`` has ``keyring``.

    Each store keeps its own set, so two stores in one process, even one on
    SQLite and one on PostgreSQL, never share a binding. Rows they return are
    still instances of the classes above. The namespace has the models by
    their class names, and ``MODELS`` in dependency order.
    """
    meta = lambda model: type("Meta", (), {"database": database, "table_name": model._meta.table_name})  # noqa: E731
    agent = type("Agent", (Agent,), {"Meta": meta(Agent), "__module__": __name__})
    made: list[type[BaseModel]] = [agent]
    for model in MODELS[1:]:
        fk = model._meta.fields["agent"]
        attrs = {
            "Meta": meta(model),
            "__module__": __name__,
            "agent": peewee.ForeignKeyField(agent, backref=fk.backref, on_delete="CASCADE", unique=fk.unique),
        }
        if model is AgentConfig and keyring is not None:
            attrs["keyring"] = keyring
        made.append(type(model.__name__, (model,), attrs))
    return SimpleNamespace(MODELS=tuple(made), **{m.__name__: m for m in made})
