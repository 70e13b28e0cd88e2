"""``alembic upgrade head`` on an empty database gives exactly the models' schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from trigger_engine.db.migrate import alembic_config, migrations_dir
from trigger_engine.db.schema import metadata
from trigger_engine.db.store import Store


def test_upgrade_head_matches_the_models(db_url: str) -> None:
    Store.open(db_url).close()
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
            assert (
                context.get_current_revision()
                == ScriptDirectory.from_config(alembic_config()).get_current_head()
            )
            assert set(inspect(conn).get_table_names()) >= set(metadata.tables)
    finally:
        engine.dispose()


def test_upgrading_twice_is_harmless(db_url: str) -> None:
    Store.open(db_url).close()
    Store.open(db_url).close()


def test_the_migrations_have_one_head_and_no_gaps() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
    assert (migrations_dir() / "env.py").is_file()
    revisions = list(script.walk_revisions())
    assert revisions[-1].down_revision is None
