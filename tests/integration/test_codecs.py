"""The one time conversion: what the raw hot-path statements write and read is exactly what
SQLAlchemy's ``UTCDateTime`` writes and reads, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select

from trigger_engine.db.codecs import TimeCodec, sqlite_text
from trigger_engine.db.schema import nodes
from trigger_engine.db.store import Store

PARIS = timezone(timedelta(hours=1))
MOMENTS = [
    datetime(2026, 11, 27, 10, 0, tzinfo=UTC),
    datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC),
    datetime(2026, 11, 27, 11, 30, 5, 7, tzinfo=PARIS),  # not UTC: stored as UTC
]


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    yield s
    s.close()


@pytest.mark.parametrize("moment", MOMENTS)
def test_raw_and_sqlalchemy_times_are_the_same_value(store: Store, moment: datetime) -> None:
    db = store.db
    codec = TimeCodec.for_dialect(db.dialect)
    p = db.queries.placeholder
    with db.tx() as conn:
        conn.execute(
            insert(nodes).values(name="orm", version="1", started_at=moment, heartbeat_at=moment)
        )
        conn.exec_driver_sql(
            "INSERT INTO nodes (name, version, started_at, heartbeat_at) "
            f"VALUES ({p}, {p}, {p}, {p})",
            ("raw", "1", codec.to_db(moment), codec.to_db(moment)),
        )
        stored = dict(conn.exec_driver_sql("SELECT name, started_at FROM nodes").fetchall())
        read = dict(conn.execute(select(nodes.c.name, nodes.c.started_at)).all())
    assert stored["orm"] == stored["raw"]  # byte for byte on SQLite, equal on PostgreSQL
    assert read == {"orm": moment, "raw": moment}
    assert codec.from_db(stored["raw"]) == moment
    assert codec.from_db(stored["raw"]).tzinfo is UTC


def test_sqlite_text_sorts_as_time_does() -> None:
    earlier, later = MOMENTS[0], MOMENTS[0] + timedelta(microseconds=1)
    assert sqlite_text(earlier) == "2026-11-27 10:00:00.000000"
    assert sqlite_text(earlier) < sqlite_text(later)  # type: ignore[operator]
    assert sqlite_text(MOMENTS[2]) == "2026-11-27 10:30:05.000007"


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_naive_time_is_refused(dialect: str) -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        TimeCodec.for_dialect(dialect).to_db(datetime(2026, 11, 27, 10, 0))
