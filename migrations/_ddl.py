"""DDL pieces shared by the numbered migrations.

Frozen like the migrations themselves: once a migration uses a piece, change
it only by adding a new one.
"""
from peewee import SQL, Field, SqliteDatabase

STATUSES = ("idle", "active", "busy", "processing", "waiting", "error", "offline")


def is_sqlite(db):
    return isinstance(db, SqliteDatabase)


def one_of(column, values):
    """A CHECK expression limiting ``column`` to ``values``."""
    return SQL("CHECK (%s IN (%s))" % (column, ", ".join("'%s'" % v for v in values)))


class Timestamp(Field):
    """TIMESTAMPTZ on PostgreSQL; fixed-width ISO-8601 UTC text on SQLite."""

    def ddl_datatype(self, ctx):
        return SQL("TEXT" if is_sqlite(self.model._meta.database) else "TIMESTAMPTZ")


def touch_updated_at(db, table):
    """A trigger that moves ``updated_at`` on every UPDATE that does not set it itself."""
    if is_sqlite(db):
        db.execute_sql(
            f"CREATE TRIGGER {table}_touch_updated_at AFTER UPDATE ON {table} FOR EACH ROW "
            f"WHEN NEW.updated_at IS OLD.updated_at BEGIN "
            f"UPDATE {table} SET updated_at = max(strftime('%Y-%m-%d %H:%M:%f000+00:00', 'now'), OLD.updated_at) "
            f"WHERE id = NEW.id; END"
        )
    else:
        db.execute_sql(
            f"CREATE TRIGGER {table}_touch_updated_at BEFORE UPDATE ON {table} FOR EACH ROW "
            f"WHEN (NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at) "
            f"EXECUTE FUNCTION optistate_touch_updated_at()"
        )
