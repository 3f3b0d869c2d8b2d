"""The ``agents`` table, and the trigger function that keeps ``updated_at`` moving."""
from peewee import CharField, Model, UUIDField

from optistate.migrations._ddl import STATUSES, Timestamp, is_sqlite, one_of, touch_updated_at


def up(migrator, db):
    class Agent(Model):
        id = UUIDField(primary_key=True)
        type = CharField(max_length=64)
        name = CharField(max_length=255)
        version = CharField(max_length=64)
        status = CharField(max_length=32, constraints=[one_of("status", STATUSES)])
        endpoint = CharField(max_length=1024, null=True)
        last_heartbeat = Timestamp()
        created_at = Timestamp()
        updated_at = Timestamp()

        class Meta:
            database = db
            table_name = "agents"
            indexes = ((("type", "name"), True), (("status",), False))

    db.create_tables([Agent], safe=False)
    if not is_sqlite(db):
        db.execute_sql(
            "CREATE FUNCTION optistate_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$"
        )
    touch_updated_at(db, "agents")


def down(migrator, db):
    db.execute_sql("DROP TABLE agents")
    if not is_sqlite(db):
        db.execute_sql("DROP FUNCTION optistate_touch_updated_at()")
