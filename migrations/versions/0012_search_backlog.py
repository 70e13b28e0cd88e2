"""the payload search is indexed in the background, not in the poll's transaction
(issue 16, target 5)

A trigram index costs about 2.5 ms of CPU per ~3 KB event, 100 times the row itself
(benchmarks/RESULTS.md, "No regression elsewhere?"): written by a trigger in the poll's
transaction, a first poll that fires 100,000 leads took five minutes instead of 25 s, and
held SQLite's write lock all along. From here on an event only enters a backlog as it is
written (``events_search_backlog``: its ``seq``, a few microseconds), and the engine's
search indexer (``db/search_index.py``) moves the backlog into the index in small batches,
outside the poll. The search reads the index and the backlog (``db/events.py``), so it
still finds every event.

SQLite, when migration 0009 made the FTS5 table: the insert trigger now fills the backlog;
the delete and update triggers take a row out of the FTS5 table only when it was indexed
(an external-content FTS5 table must not be told to delete what it never held). The
events already there are indexed: the backlog starts empty.

PostgreSQL, when migration 0009 made the pg_trgm index: a GIN index cannot be written
later for some rows of a table, so the indexed text moves to a table of its own,
``events_search`` (``seq``, ``payload``; about as large again as ``events.payload``), with
the GIN index; the index on ``events.payload`` goes. A statement trigger fills the backlog
from the rows an INSERT added; both tables follow their event's deletion (foreign keys,
``ON DELETE CASCADE``). Every event already there enters the backlog (the indexer catches
up in the background; the search reads the backlog meanwhile).

Where 0009 made no index, nothing changes: the search scans a bounded number of events.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

SEARCH_TABLE = "events_search"
BACKLOG = "events_search_backlog"
OLD_INDEX = "ix_events_payload_trgm"  # 0009's, on events.payload (PostgreSQL)
NEW_INDEX = "ix_events_search_payload_trgm"  # on events_search.payload (PostgreSQL)
ENQUEUE = "events_search_enqueue"  # PostgreSQL: trigger and function

_INDEXED = f"NOT EXISTS (SELECT 1 FROM {BACKLOG} WHERE seq = old.seq)"
_FORGET = (
    f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}, rowid, payload) "
    f"SELECT 'delete', old.seq, old.payload WHERE {_INDEXED}; "
)

_SQLITE_UP = (
    f"DROP TRIGGER {SEARCH_TABLE}_insert",
    f"DROP TRIGGER {SEARCH_TABLE}_delete",
    f"DROP TRIGGER {SEARCH_TABLE}_update",
    f"CREATE TABLE {BACKLOG} (seq INTEGER PRIMARY KEY)",
    f"CREATE TRIGGER {SEARCH_TABLE}_insert AFTER INSERT ON events BEGIN "
    f"INSERT INTO {BACKLOG}(seq) VALUES (new.seq); END",
    f"CREATE TRIGGER {SEARCH_TABLE}_delete AFTER DELETE ON events BEGIN "
    f"{_FORGET}DELETE FROM {BACKLOG} WHERE seq = old.seq; END",
    f"CREATE TRIGGER {SEARCH_TABLE}_update AFTER UPDATE OF payload ON events BEGIN "
    f"{_FORGET}INSERT OR IGNORE INTO {BACKLOG}(seq) VALUES (new.seq); END",
)

# 0009's triggers, for the downgrade
_SQLITE_0009 = (
    f"CREATE TRIGGER {SEARCH_TABLE}_insert AFTER INSERT ON events BEGIN "
    f"INSERT INTO {SEARCH_TABLE}(rowid, payload) VALUES (new.seq, new.payload); END",
    f"CREATE TRIGGER {SEARCH_TABLE}_delete AFTER DELETE ON events BEGIN "
    f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}, rowid, payload) "
    "VALUES ('delete', old.seq, old.payload); END",
    f"CREATE TRIGGER {SEARCH_TABLE}_update AFTER UPDATE OF payload ON events BEGIN "
    f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}, rowid, payload) "
    "VALUES ('delete', old.seq, old.payload); "
    f"INSERT INTO {SEARCH_TABLE}(rowid, payload) VALUES (new.seq, new.payload); END",
)


def _has(conn: sa.Connection, sql: str, name: str) -> bool:
    return conn.execute(sa.text(sql), {"name": name}).first() is not None


def _sqlite_indexed(conn: sa.Connection) -> bool:
    return _has(
        conn, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name", SEARCH_TABLE
    )


def _pg_index(conn: sa.Connection, name: str) -> bool:
    return _has(
        conn,
        "SELECT 1 FROM pg_indexes WHERE indexname = :name "
        "AND schemaname = ANY (current_schemas(false))",
        name,
    )


def _trgm_ops(conn: sa.Connection) -> str:
    """``gin_trgm_ops``, qualified by the schema pg_trgm is in."""
    schema = conn.execute(
        sa.text(
            "SELECT n.nspname FROM pg_extension AS e "
            "JOIN pg_namespace AS n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'"
        )
    ).scalar_one()
    return conn.dialect.identifier_preparer.quote_identifier(schema) + ".gin_trgm_ops"


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        if _sqlite_indexed(conn):
            for statement in _SQLITE_UP:
                conn.execute(sa.text(statement))
    elif conn.dialect.name == "postgresql" and _pg_index(conn, OLD_INDEX):
        for statement in (
            f"CREATE TABLE {BACKLOG} (seq bigint PRIMARY KEY "
            "REFERENCES events (seq) ON DELETE CASCADE)",
            f"CREATE TABLE {SEARCH_TABLE} (seq bigint PRIMARY KEY "
            "REFERENCES events (seq) ON DELETE CASCADE, payload text NOT NULL)",
            f"CREATE INDEX {NEW_INDEX} ON {SEARCH_TABLE} USING gin (payload {_trgm_ops(conn)})",
            f"CREATE FUNCTION {ENQUEUE}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"INSERT INTO {BACKLOG} (seq) SELECT seq FROM added; RETURN NULL; END $$",
            f"CREATE TRIGGER {ENQUEUE} AFTER INSERT ON events REFERENCING NEW TABLE AS added "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {ENQUEUE}()",
            f"INSERT INTO {BACKLOG} (seq) SELECT seq FROM events",
            f"DROP INDEX {OLD_INDEX}",
        ):
            conn.execute(sa.text(statement))


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        if _sqlite_indexed(conn):
            for trigger in ("insert", "delete", "update"):
                conn.execute(sa.text(f"DROP TRIGGER {SEARCH_TABLE}_{trigger}"))
            conn.execute(sa.text(f"DROP TABLE {BACKLOG}"))
            for statement in _SQLITE_0009:
                conn.execute(sa.text(statement))
            conn.execute(sa.text(f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}) VALUES ('rebuild')"))
    elif conn.dialect.name == "postgresql" and _pg_index(conn, NEW_INDEX):
        for statement in (
            f"DROP TRIGGER {ENQUEUE} ON events",
            f"DROP FUNCTION {ENQUEUE}()",
            f"DROP TABLE {SEARCH_TABLE}",
            f"DROP TABLE {BACKLOG}",
            f"CREATE INDEX {OLD_INDEX} ON events USING gin (payload {_trgm_ops(conn)})",
        ):
            conn.execute(sa.text(statement))
