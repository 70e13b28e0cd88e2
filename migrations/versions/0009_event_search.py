"""events you can read: the start of each receiver's answer, and an index for the
payload search (issue 14)

``attempts.response_body`` keeps the first KB of what the receiver answered.

The payload search (``events --search``) gets an index where the database offers one:
SQLite an FTS5 table with the trigram tokenizer (SQLite 3.34 or newer, built with FTS5)
over ``events.payload`` as external content, kept in sync by triggers; PostgreSQL a GIN
index with pg_trgm's ``gin_trgm_ops`` on ``events.payload`` (``ILIKE '%text%'`` uses it),
after ``CREATE EXTENSION IF NOT EXISTS pg_trgm`` (in ``public`` when it can, else in the
first schema of the search path). When neither can be made (no FTS5; no right to create
the extension), the migration goes on without it and the search scans a bounded number of
the newest events instead (``db/events.py``). These objects are outside the metadata of
``db/schema.py`` (see ``SEARCH_TABLE`` there).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import exc as sa_exc

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SEARCH_TABLE = "events_search"
SEARCH_INDEX = "ix_events_payload_trgm"

_SQLITE_UP = (
    f"CREATE VIRTUAL TABLE {SEARCH_TABLE} USING fts5("
    "payload, content='events', content_rowid='seq', tokenize='trigram')",
    f"CREATE TRIGGER {SEARCH_TABLE}_insert AFTER INSERT ON events BEGIN "
    f"INSERT INTO {SEARCH_TABLE}(rowid, payload) VALUES (new.seq, new.payload); END",
    f"CREATE TRIGGER {SEARCH_TABLE}_delete AFTER DELETE ON events BEGIN "
    f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}, rowid, payload) "
    "VALUES ('delete', old.seq, old.payload); END",
    f"CREATE TRIGGER {SEARCH_TABLE}_update AFTER UPDATE OF payload ON events BEGIN "
    f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}, rowid, payload) "
    "VALUES ('delete', old.seq, old.payload); "
    f"INSERT INTO {SEARCH_TABLE}(rowid, payload) VALUES (new.seq, new.payload); END",
    f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}) VALUES ('rebuild')",
)


def _try(conn: sa.Connection, statement: str) -> bool:
    """Run ``statement`` in a savepoint; False (and nothing done) when the database
    refuses it."""
    try:
        with conn.begin_nested():
            conn.execute(sa.text(statement))
    except sa_exc.DBAPIError:
        return False
    return True


def _trgm_schema(conn: sa.Connection) -> str | None:
    return conn.execute(
        sa.text(
            "SELECT n.nspname FROM pg_extension AS e "
            "JOIN pg_namespace AS n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'"
        )
    ).scalar_one_or_none()


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.add_column(sa.Column("response_body", sa.Text(), nullable=True))
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        if _try(conn, "CREATE VIRTUAL TABLE temp.fts5_probe USING fts5(x, tokenize='trigram')"):
            conn.execute(sa.text("DROP TABLE temp.fts5_probe"))
            for statement in _SQLITE_UP:
                conn.execute(sa.text(statement))
    elif conn.dialect.name == "postgresql":
        if _trgm_schema(conn) is None and not _try(
            conn, "CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public"
        ):
            _try(conn, "CREATE EXTENSION IF NOT EXISTS pg_trgm")
        schema = _trgm_schema(conn)
        if schema is not None:
            quoted = conn.dialect.identifier_preparer.quote_identifier(schema)
            _try(
                conn,
                f"CREATE INDEX {SEARCH_INDEX} ON events USING gin (payload {quoted}.gin_trgm_ops)",
            )


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {SEARCH_TABLE}_{trigger}"))
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {SEARCH_TABLE}"))
    elif conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"DROP INDEX IF EXISTS {SEARCH_INDEX}"))
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.drop_column("response_body")
