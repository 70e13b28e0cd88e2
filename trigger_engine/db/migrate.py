"""Applies the Alembic migrations that ship inside the package.

In a wheel or a plain ``pip install .`` they sit at ``trigger_engine/migrations``; in a
source checkout (``pip install -e .``) at the top-level ``migrations/``.

Every command opens the database through here, so the usual case, a schema already at the
newest revision, costs one query (:func:`is_current`) and no Alembic: importing Alembic and
reading its script directory takes longer than most commands. :data:`HEAD` names that
revision; a unit test checks it against the migrations folder, so a new migration updates
it (a stale value costs only the slow path: Alembic finds the schema up to date).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

# The newest migration in migrations/versions (checked by tests/integration/test_migrations.py)
HEAD = "0013"

_PACKAGE = Path(__file__).resolve().parent.parent  # trigger_engine/


def migrations_dir() -> Path:
    """Where the Alembic migrations are: in the package (installed) or beside it (checkout)."""
    for candidate in (_PACKAGE / "migrations", _PACKAGE.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"the database migrations are missing from {_PACKAGE}")


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    """An Alembic configuration pointing at our migrations, on ``connection`` when given."""
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["connection"] = connection
    return cfg


def is_current(connection: Connection) -> bool:
    """Whether the schema is at :data:`HEAD`: one query of Alembic's version table. It
    raises when that table is not there (a new database; on PostgreSQL the transaction is
    then unusable, so give this query its own); :func:`upgrade` then decides."""
    stored = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
    return list(stored) == [HEAD]


# pg_advisory_xact_lock key: "trigger-engine migrations"
_MIGRATION_LOCK = 0x7472_6967_6765_72


def upgrade(connection: Connection) -> None:
    """Apply the migrations. On PostgreSQL an advisory lock (held until the transaction
    ends) makes nodes starting together, or ``db upgrade`` beside running nodes, migrate
    one at a time; the others then find the schema up to date."""
    from alembic import command

    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    command.upgrade(alembic_config(connection), "head")
