"""Alembic environment. The engine runs migrations itself (``trigger_engine.db.migrate``),
handing over an open connection; ``alembic`` on the command line is not needed."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from trigger_engine.db.schema import is_search_index, metadata


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Leave the payload search's index (made by 0006, outside the metadata) out of
    comparisons."""
    return not is_search_index(name)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # pragma: no cover - only for developers running the alembic CLI by hand
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set sqlalchemy.url (alembic -x is not used here)")
    with create_engine(url).begin() as conn:
        _run(conn)
