"""``alembic upgrade head`` on an empty database gives exactly the models' schema."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, event, insert, inspect, select, text

from trigger_engine.core.dedupe import key_items
from trigger_engine.db import migrate
from trigger_engine.db.engine import Database, make_engine
from trigger_engine.db.migrate import alembic_config, migrations_dir
from trigger_engine.db.schema import is_search_index, metadata, poll_state, seen_keys
from trigger_engine.db.store import Store


def test_upgrade_head_matches_the_models(db_url: str) -> None:
    Store.open(db_url).close()
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "include_name": lambda name, _type, _parents: not is_search_index(name),
                },
            )
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


def test_head_names_the_newest_migration() -> None:
    """migrate.HEAD spares a current database Alembic: it must be the folder's head (a new
    migration updates it)."""
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == migrate.HEAD


def test_a_current_schema_costs_one_query(db_url: str) -> None:
    Store.open(db_url).close()
    db = Database(make_engine(db_url))
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    try:
        db.upgrade()
    finally:
        db.close()
    assert [s for s in statements if not s.startswith("BEGIN")] == [
        "SELECT version_num FROM alembic_version"
    ]


def test_opening_a_current_database_does_not_import_alembic(db_url: str) -> None:
    Store.open(db_url).close()
    code = (
        "import sys; from trigger_engine.db.store import Store; "
        f"Store.open({db_url!r}).close(); print(sorted(m for m in sys.modules if "
        "m.split('.')[0] in ('alembic', 'mako')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stderr


def test_0005_adds_the_node_registry_to_the_nodes_already_there(db_url: str) -> None:
    """A database at 0004 with a node row: upgraded, the node says nothing of its sinks
    (it counts as an older version); downgraded, the columns go and the row stays."""
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0004")
            conn.execute(
                text(
                    "INSERT INTO nodes (name, version, started_at, heartbeat_at) "
                    "VALUES ('old-node', '0.0.9', :at, :at)"
                ),
                {"at": datetime(2026, 12, 1, tzinfo=UTC)},
            )
        with Store.open(db_url) as store:
            (old,) = store.nodes.views(datetime(2026, 12, 1, tzinfo=UTC))
            assert (old.name, old.sinks, old.config_digest) == ("old-node", None, None)
            store.nodes.heartbeat(
                "old-node",
                version="0.1.0",
                now=datetime(2026, 12, 1, 0, 0, 10, tzinfo=UTC),
                sinks={"crm": None},
                config_digest="abc",
            )
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0004")
            assert "sinks" not in {c["name"] for c in inspect(conn).get_columns("nodes")}
            names = conn.execute(text("SELECT name FROM nodes")).scalars().all()
            assert names == ["old-node"]
            command.upgrade(alembic_config(conn), "head")
    finally:
        engine.dispose()


def _seen_rows(conn: Connection) -> list[tuple[Any, ...]]:
    return [
        tuple(row)
        for row in conn.execute(
            select(
                seen_keys.c.account,
                seen_keys.c.trigger,
                seen_keys.c.key,
                seen_keys.c.first_seen_at,
                seen_keys.c.seeded,
                seen_keys.c.version,
            ).order_by(seen_keys.c.account, seen_keys.c.trigger, seen_keys.c.key)
        )
    ]


def _without_rowid(conn: Connection) -> bool:
    ddl = conn.execute(
        text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'seen_keys'")
    ).scalar_one()
    return "WITHOUT ROWID" in str(ddl)


def test_0010_keeps_the_seen_set_and_stores_it_once_on_sqlite(db_url: str) -> None:
    """Seen keys written at 0009 come through the upgrade (SQLite: into a WITHOUT ROWID
    table, the rows stored once) and back through the downgrade unchanged, and a poll
    after the upgrade still fires only what is new."""
    at = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    keys = [
        {"account": "acme", "trigger": "leads", "key": "a", "seeded": True, "version": None},
        {"account": "acme", "trigger": "leads", "key": "b", "seeded": False, "version": "v1"},
        {"account": "acme", "trigger": "crm", "key": "a", "seeded": False, "version": None},
    ]
    engine = create_engine(db_url)
    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0009")
            conn.execute(insert(seen_keys), [{**k, "first_seen_at": at} for k in keys])
            conn.execute(
                insert(poll_state).values(
                    account="acme", trigger="leads", seeded_at=at, items_known=2
                )
            )
            before = _seen_rows(conn)
        with Store.open(db_url) as store:  # upgrades to head
            items = [{"id": key} for key in ("a", "b", "c")]
            result = store.polls.record(
                "acme",
                "leads",
                key_items(items, ["id"]),
                event_type="lead.new",
                emit_first=False,
                sinks=[],
                now=at,
            )
            assert (result.first_poll, result.new_events) == (False, 1)
        with engine.begin() as conn:
            after = _seen_rows(conn)
            assert [r for r in after if r[2] != "c"] == before
            assert [r[:3] for r in after if r[2] == "c"] == [("acme", "leads", "c")]
            if sqlite:
                assert _without_rowid(conn)
            command.downgrade(alembic_config(conn), "0009")
            assert _seen_rows(conn) == after
            if sqlite:
                assert not _without_rowid(conn)
            command.upgrade(alembic_config(conn), "head")
    finally:
        engine.dispose()
