"""the seen set stored once on SQLite: ``seen_keys`` becomes a WITHOUT ROWID table
(issue 16)

A rowid table with a TEXT primary key is stored twice by SQLite: the rows in rowid order
and a separate index on (account, trigger, key) that every lookup goes through. A WITHOUT
ROWID table keeps the rows in that index itself: 96 bytes per key instead of 157 at a
million keys (``benchmarks/seen.py``), one B-tree to write per new key instead of two, the
same lookups. The table is copied once, in key order (a few seconds per million keys, and
the file needs room for the copy while it runs). PostgreSQL has no such option: nothing
changes there.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_COLUMNS = 'account, "trigger", "key", first_seen_at, seeded, version'
_TABLE = (
    "CREATE TABLE {name} (\n"
    "\taccount VARCHAR(200) NOT NULL, \n"
    '\t"trigger" VARCHAR(100) NOT NULL, \n'
    '\t"key" TEXT NOT NULL, \n'
    "\tfirst_seen_at DATETIME NOT NULL, \n"
    "\tseeded BOOLEAN DEFAULT 0 NOT NULL, \n"
    "\tversion TEXT, \n"
    '\tCONSTRAINT pk_seen_keys PRIMARY KEY (account, "trigger", "key")\n'
    "){options}"
)


def _rebuild(options: str) -> None:
    """Copy ``seen_keys`` into a table made with ``options``, in key order, then swap."""
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(_TABLE.format(name="seen_keys_rebuilt", options=options))
    op.execute(
        f"INSERT INTO seen_keys_rebuilt ({_COLUMNS}) SELECT {_COLUMNS} FROM seen_keys "
        'ORDER BY account, "trigger", "key"'
    )
    op.execute("DROP TABLE seen_keys")
    op.execute("ALTER TABLE seen_keys_rebuilt RENAME TO seen_keys")


def upgrade() -> None:
    _rebuild(" WITHOUT ROWID")


def downgrade() -> None:
    _rebuild("")
