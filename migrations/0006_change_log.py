"""The change log: ``agent_events``, written by triggers, and a ``revision`` on every row that changes.

Every change to ``agents``, ``agent_configs``, ``agent_states``,
``agent_capabilities`` and ``agent_leases``, by any writer (optistate, the
seed's SQLAlchemy models, psql), adds one event row in the same transaction:
a store-wide revision, the time, the agent, the kind, the key, the tracked
columns before and after, and the actor. A config value is ``'***'`` in the
log whenever the row is sensitive before or after the change; a key that
becomes sensitive has its earlier events masked too. Not events: heartbeats
(``last_heartbeat``), ``updated_at`` and lease renewals (``expires_at``),
which are excluded by each trigger's ``WHEN``; metrics, which have no trigger.

``optistate_revision`` is one row: the last revision handed out (SQLite; on
PostgreSQL the sequence ``optistate_revisions`` hands them out) and the last
revision compacted away. Taking a revision locks that row until the
transaction ends (SQLite: the write lock; PostgreSQL: ``FOR UPDATE``, which
makes no new row version however many revisions a transaction takes), so
changes commit one at a time, in revision order, and a reader that sees
revision r committed has seen every revision below r that will ever exist
(those rolled back leave gaps that never fill). Heartbeats and renewals take
no revision and never wait on it.

The actor is ``optistate.actor``, a transaction-local setting (PostgreSQL,
``set_config(…, true)``; it works through a transaction-mode pooler) or the
one row of ``optistate_actor`` (SQLite, written and cleared inside the writing
transaction); without it, PostgreSQL records ``current_user`` and SQLite
``'unknown'``. PostgreSQL also sends ``NOTIFY optistate_events`` (empty
payload, so one per transaction) to wake watchers.
"""
from optistate.migrations._ddl import is_sqlite

TRACKED = {  # table: (kind, agent column, key column, {tracked column: its kind of value})
    "agents": ("agent", "id", None, {
        "type": "text", "name": "text", "version": "text", "status": "text", "endpoint": "text", "ttl_seconds": "num",
    }),
    "agent_configs": ("config", "agent_id", "config_key", {
        "config_value": "secret", "config_type": "text", "is_sensitive": "bool", "description": "text",
    }),
    "agent_states": ("state", "agent_id", None, {
        "status": "text", "current_workflow": "text", "workflow_data": "json", "resource_locks": "json",
        "error_count": "num", "last_error": "json", "resource_usage": "json", "metadata": "json",
    }),
    "agent_capabilities": ("capability", "agent_id", "capability_name", {
        "capability_version": "text", "description": "text", "parameters": "json", "is_enabled": "bool",
    }),
    "agent_leases": ("lease", "holder_id", "resource", {"holder_id": "held", "token": "num"}),
}
REVISIONED = ("agents", "agent_configs", "agent_states", "agent_capabilities")
KINDS = ("agent", "config", "state", "capability", "lease")
MASK = "***"
SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f000+00:00', 'now')"
TAKE = "PERFORM 1 FROM optistate_revision WHERE id = 1 FOR UPDATE;"  # PostgreSQL: the commit-order lock


def _changed(sqlite, columns):
    """The WHEN of an UPDATE trigger: a tracked column changed."""
    differ = "IS NOT" if sqlite else "IS DISTINCT FROM"
    return " OR ".join(f"OLD.{c} {differ} NEW.{c}" for c in columns)


def _value(sqlite, ref, kind, sensitive):
    """SQL for one tracked column (``ref``, e.g. ``NEW.status``) as a JSON value; ``sensitive`` masks a secret."""
    if kind == "held":
        return f"json(CASE WHEN {ref} IS NULL THEN 'false' ELSE 'true' END)" if sqlite else f"{ref} IS NOT NULL"
    if kind == "bool" and sqlite:
        return f"json(CASE WHEN {ref} THEN 'true' ELSE 'false' END)"
    if kind == "json" and sqlite:
        return f"json({ref})"
    if kind == "secret":
        return f"CASE WHEN {sensitive} THEN '{MASK}' ELSE {ref} END"
    return ref


def _object(sqlite, row, columns, op):
    """A JSON object of ``row``'s (OLD or NEW) tracked columns; in an UPDATE, a secret sensitive on either
    side is masked."""
    sensitive = "OLD.is_sensitive OR NEW.is_sensitive" if op == "UPDATE" else f"{row}.is_sensitive"
    pairs = ", ".join(
        f"'{'held' if kind == 'held' else c}', {_value(sqlite, f'{row}.{c}', kind, sensitive)}"
        for c, kind in columns.items()
    )
    return f"{'json_object' if sqlite else 'jsonb_build_object'}({pairs})"


def _scrub(sqlite, agent, key):
    """Mask the earlier events of a config that has just become sensitive."""
    if sqlite:
        sets = ", ".join(
            f"{c} = CASE WHEN {c} IS NULL THEN NULL ELSE json_set({c}, '$.config_value', '{MASK}') END"
            for c in ("old_value", "new_value")
        )
    else:
        sets = ", ".join(f"{c} = jsonb_set({c}, '{{config_value}}', '\"{MASK}\"')" for c in ("old_value", "new_value"))
    return f"UPDATE agent_events SET {sets} WHERE kind = 'config' AND agent_id = {agent} AND key = {key}"


def _postgres_up(db):
    db.execute_sql(
        f"CREATE FUNCTION optistate_next_revision() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {TAKE} "
        "NEW.revision := nextval('optistate_revisions'); RETURN NEW; END $$"
    )
    for table, (kind, agent, key, columns) in TRACKED.items():
        revisioned = table in REVISIONED
        take = f"{TAKE} rev := nextval('optistate_revisions');"
        scrub = ""
        if kind == "config":
            scrub = (
                "IF NEW.is_sensitive AND NOT coalesce(OLD.is_sensitive, false) THEN "
                f"{_scrub(False, 'NEW.agent_id', 'NEW.config_key')}; END IF;"
            )
        db.execute_sql(
            f"CREATE FUNCTION optistate_log_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "DECLARE rev bigint; o jsonb; n jsonb; BEGIN "
            + (f"IF TG_OP = 'DELETE' THEN {take} ELSE rev := NEW.revision; END IF; " if revisioned else f"{take} ")
            + f"IF TG_OP = 'INSERT' THEN n := {_object(False, 'NEW', columns, 'INSERT')}; "
            f"ELSIF TG_OP = 'DELETE' THEN o := {_object(False, 'OLD', columns, 'DELETE')}; "
            f"ELSE o := {_object(False, 'OLD', columns, 'UPDATE')}; n := {_object(False, 'NEW', columns, 'UPDATE')}; "
            "END IF; "
            "INSERT INTO agent_events (revision, at, agent_id, kind, key, old_value, new_value, actor) VALUES "
            f"(rev, now(), CASE WHEN TG_OP = 'DELETE' THEN OLD.{agent} ELSE coalesce(NEW.{agent}, OLD.{agent}) END, "
            f"'{kind}', " + (f"CASE WHEN TG_OP = 'DELETE' THEN OLD.{key} ELSE NEW.{key} END" if key else "NULL")
            + ", o, n, coalesce(nullif(current_setting('optistate.actor', true), ''), current_user)); "
            f"{scrub} PERFORM pg_notify('optistate_events', ''); RETURN NULL; END $$"
        )
        when = _changed(False, columns)
        if revisioned:
            db.execute_sql(
                f"CREATE TRIGGER {table}_revision BEFORE INSERT ON {table} FOR EACH ROW "
                "EXECUTE FUNCTION optistate_next_revision()"
            )
            db.execute_sql(
                f"CREATE TRIGGER {table}_revision_update BEFORE UPDATE ON {table} FOR EACH ROW WHEN ({when}) "
                "EXECUTE FUNCTION optistate_next_revision()"
            )
        db.execute_sql(
            f"CREATE TRIGGER {table}_log AFTER INSERT OR DELETE ON {table} FOR EACH ROW "
            f"EXECUTE FUNCTION optistate_log_{table}()"
        )
        db.execute_sql(
            f"CREATE TRIGGER {table}_log_update AFTER UPDATE ON {table} FOR EACH ROW WHEN ({when}) "
            f"EXECUTE FUNCTION optistate_log_{table}()"
        )


def _sqlite_up(db):
    db.execute_sql("CREATE TABLE optistate_actor (id INTEGER PRIMARY KEY CHECK (id = 1), actor TEXT NOT NULL)")
    actor = "coalesce((SELECT actor FROM optistate_actor), 'unknown')"
    revision = "(SELECT revision FROM optistate_revision)"
    for table, (kind, agent, key, columns) in TRACKED.items():
        for op, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
            old = "NULL" if op == "INSERT" else _object(True, "OLD", columns, op)
            new = "NULL" if op == "DELETE" else _object(True, "NEW", columns, op)
            body = ["UPDATE optistate_revision SET revision = revision + 1"]
            if table in REVISIONED and op != "DELETE":
                body.append(f"UPDATE {table} SET revision = {revision} WHERE id = NEW.id")
            agent_of = f"coalesce(NEW.{agent}, OLD.{agent})" if op == "UPDATE" else f"{row}.{agent}"
            body.append(
                "INSERT INTO agent_events (revision, at, agent_id, kind, key, old_value, new_value, actor) VALUES "
                f"({revision}, {SQLITE_NOW}, {agent_of}, '{kind}', {f'{row}.{key}' if key else 'NULL'}, "
                f"{old}, {new}, {actor})"
            )
            if kind == "config" and op != "DELETE":
                became = "NEW.is_sensitive" + (" AND NOT OLD.is_sensitive" if op == "UPDATE" else "")
                body.append(_scrub(True, "NEW.agent_id", "NEW.config_key") + f" AND {became}")
            when = f" WHEN {_changed(True, columns)}" if op == "UPDATE" else ""
            db.execute_sql(
                f"CREATE TRIGGER {table}_log_{op.lower()} AFTER {op} ON {table} FOR EACH ROW{when} "
                f"BEGIN {'; '.join(body)}; END"
            )
    for table in REVISIONED:  # setting the revision must not move updated_at
        _sqlite_touch(db, table, "NEW.updated_at IS OLD.updated_at AND NEW.revision IS OLD.revision")


def _sqlite_touch(db, table, when):
    db.execute_sql(f"DROP TRIGGER {table}_touch_updated_at")
    db.execute_sql(
        f"CREATE TRIGGER {table}_touch_updated_at AFTER UPDATE ON {table} FOR EACH ROW WHEN {when} BEGIN "
        f"UPDATE {table} SET updated_at = max({SQLITE_NOW}, OLD.updated_at) WHERE id = NEW.id; END"
    )


def up(migrator, db):
    sqlite = is_sqlite(db)
    ident, stamp, data = ("TEXT", "TEXT", "TEXT") if sqlite else ("UUID", "TIMESTAMPTZ", "JSONB")
    kinds = ", ".join(f"'{k}'" for k in KINDS)
    db.execute_sql(
        "CREATE TABLE optistate_revision (id INTEGER PRIMARY KEY CHECK (id = 1),"
        " revision BIGINT NOT NULL, compacted BIGINT NOT NULL)"
    )
    db.execute_sql("INSERT INTO optistate_revision (id, revision, compacted) VALUES (1, 0, 0)")
    if not sqlite:
        db.execute_sql("CREATE SEQUENCE optistate_revisions")
    db.execute_sql(
        "CREATE TABLE agent_events ("
        " revision BIGINT NOT NULL PRIMARY KEY,"
        f" at {stamp} NOT NULL,"
        f" agent_id {ident},"
        f" kind VARCHAR(16) NOT NULL CHECK (kind IN ({kinds})),"
        " key VARCHAR(255),"
        f" old_value {data},"
        f" new_value {data},"
        " actor TEXT NOT NULL)"
    )
    db.execute_sql("CREATE INDEX agent_events_agent_id ON agent_events (agent_id, revision)")
    db.execute_sql("CREATE INDEX agent_events_at ON agent_events (at)")
    for table in REVISIONED:
        db.execute_sql(f"ALTER TABLE {table} ADD COLUMN revision BIGINT NOT NULL DEFAULT 0")
    (_sqlite_up if sqlite else _postgres_up)(db)


def down(migrator, db):
    sqlite = is_sqlite(db)
    for table in TRACKED:
        if sqlite:
            for op in ("insert", "update", "delete"):
                db.execute_sql(f"DROP TRIGGER {table}_log_{op}")
        else:
            db.execute_sql(f"DROP FUNCTION optistate_log_{table}() CASCADE")
            if table in REVISIONED:
                db.execute_sql(f"DROP TRIGGER {table}_revision ON {table}")
                db.execute_sql(f"DROP TRIGGER {table}_revision_update ON {table}")
    if sqlite:
        for table in REVISIONED:
            _sqlite_touch(db, table, "NEW.updated_at IS OLD.updated_at")
        db.execute_sql("DROP TABLE optistate_actor")
    else:
        db.execute_sql("DROP FUNCTION optistate_next_revision()")
    for table in REVISIONED:
        db.execute_sql(f"ALTER TABLE {table} DROP COLUMN revision")
    db.execute_sql("DROP TABLE agent_events")
    db.execute_sql("DROP TABLE optistate_revision")
    if not sqlite:
        db.execute_sql("DROP SEQUENCE optistate_revisions")
