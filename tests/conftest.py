"""Fixtures shared by every test layer.

``db_url`` runs a test once on SQLite and once on PostgreSQL (the server at
``TRIGGER_ENGINE_TEST_PG``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``),
each PostgreSQL test in a schema of its own. Without a server the PostgreSQL runs skip
with the reason, unless ``TRIGGER_ENGINE_REQUIRE_PG=1`` (set by ``.ci/run``) makes them fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from functools import cache

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG_URL = os.environ.get(
    "TRIGGER_ENGINE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@cache
def pg_unavailable() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL at {make_url(PG_URL).render_as_string()} is unavailable: {exc}"
    return None


def require_pg() -> None:
    reason = pg_unavailable()
    if reason is None:
        return
    if os.environ.get("TRIGGER_ENGINE_REQUIRE_PG") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, private schema."""
    require_pg()
    schema = f"te_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db')}/trigger-engine.db"
    url: str = request.getfixturevalue("pg_url")
    return url
