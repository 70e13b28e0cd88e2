"""Applies the Alembic migrations that ship inside the package.

In a wheel or a plain ``pip install .`` they sit at ``trigger_engine/migrations``; in a
source checkout (``pip install -e .``) at the top-level ``migrations/``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, text

_PACKAGE = Path(__file__).resolve().parent.parent  # trigger_engine/


def migrations_dir() -> Path:
    """Where the Alembic migrations are: in the package (installed) or beside it (checkout)."""
    for candidate in (_PACKAGE / "migrations", _PACKAGE.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"the database migrations are missing from {_PACKAGE}")


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    """An Alembic configuration pointing at our migrations, on ``connection`` when given."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["connection"] = connection
    return cfg


# pg_advisory_xact_lock key: "trigger-engine migrations"
_MIGRATION_LOCK = 0x7472_6967_6765_72


def upgrade(connection: Connection) -> None:
    """Apply the migrations. On PostgreSQL an advisory lock (held until the transaction
    ends) makes nodes starting together, or ``db upgrade`` beside running nodes, migrate
    one at a time; the others then find the schema up to date."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    command.upgrade(alembic_config(connection), "head")
