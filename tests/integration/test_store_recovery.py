"""The database comes back: units of work retried on a lost connection, refusals named,
the activity that /healthz reads, and a SQLite file deleted or replaced under the store."""

from __future__ import annotations

import os
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from trigger_engine.db.engine import Database, units_of_work
from trigger_engine.db.store import Store
from trigger_engine.errors import DatabaseError, StoreLost
from trigger_engine.types import StoreFailure

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@units_of_work
class Killer:
    """A repository whose unit of work loses its connection the first ``times`` runs."""

    def __init__(self, db: Database, times: int) -> None:
        self.db = db
        self.left = times
        self.runs = 0

    def work(self) -> int:
        self.runs += 1
        with self.db.tx() as conn:
            if self.left > 0:
                self.left -= 1
                # the server ends this very session, as pg_terminate_backend from a
                # failover or an operator would
                conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")
            return int(conn.exec_driver_sql("SELECT 41 + 1").scalar_one())


def fast(store: Store) -> Store:
    store.db.retry_waits = (0.0, 0.0, 0.0)
    return store


@pytest.mark.postgres
def test_a_unit_of_work_whose_backend_is_terminated_runs_again_whole(pg_url: str) -> None:
    with fast(Store.open(pg_url)) as store:
        changes: list[tuple[str, StoreFailure | None]] = []
        store.db.activity.on_change = lambda unit, failure: changes.append((unit, failure))
        killer = Killer(store.db, times=2)
        assert killer.work() == 42
        assert killer.runs == 3
        assert [unit for unit, _ in changes] == ["Killer.work", "Killer.work"]
        failed, recovered = changes[0][1], changes[1][1]
        assert failed is not None and failed.transient
        assert "terminating connection" in failed.reason
        assert recovered is None  # it recovered
        assert store.db.activity.failures() == {"Killer.work": 2}
        assert store.db.activity.snapshot().failing == ()


@pytest.mark.postgres
def test_a_connection_that_stays_lost_reaches_the_caller_as_transient(pg_url: str) -> None:
    with fast(Store.open(pg_url)) as store:
        killer = Killer(store.db, times=10)
        with pytest.raises(DatabaseError) as info:
            killer.work()
        assert info.value.transient
        assert killer.runs == 4  # the first run and one per wait
        (failing,) = store.db.activity.snapshot().failing
        assert failing.unit == "Killer.work" and failing.failures == 4


@pytest.mark.postgres
def test_repositories_survive_their_pooled_connections_being_terminated(pg_url: str) -> None:
    with fast(Store.open(pg_url + "&application_name=te_victim")) as store:
        store.nodes.heartbeat("n1", version="t", now=NOW)
        admin = create_engine(pg_url)
        with admin.begin() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'te_victim'"
                )
            ).scalar_one()
        admin.dispose()
        assert killed >= 1
        store.nodes.heartbeat("n1", version="t", now=NOW)  # no error: a fresh connection
        assert [v.name for v in store.nodes.views(NOW)] == ["n1"]


def test_a_sqlite_file_locked_elsewhere_is_waited_for_then_the_unit_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trigger_engine.db.engine as db_engine

    monkeypatch.setattr(db_engine, "BUSY_TIMEOUT_MS", 50)
    path = tmp_path / "te.db"
    with fast(Store.open(f"sqlite:///{path}")) as store:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        released = threading.Event()

        def on_change(unit: str, failure: StoreFailure | None) -> None:
            if failure is not None and not released.is_set():
                assert failure.transient and "locked" in failure.reason
                other.execute("COMMIT")  # the other session lets go after our first try
                released.set()

        store.db.activity.on_change = on_change
        store.nodes.heartbeat("n1", version="t", now=NOW)
        assert released.is_set()
        assert [v.name for v in store.nodes.views(NOW)] == ["n1"]
        other.close()


def test_a_full_disk_is_a_refusal_named_once_and_not_retried(tmp_path: Path) -> None:
    with fast(Store.open(f"sqlite:///{tmp_path / 'te.db'}")) as store:
        with store.db.engine.connect() as conn:
            driver: Any = conn.connection.driver_connection
            pages = driver.execute("PRAGMA page_count").fetchone()[0]
            driver.execute(f"PRAGMA max_page_count = {pages}")  # not one page more
        with pytest.raises(DatabaseError) as info:
            store.nodes.heartbeat("n" * 5000, version="t" * 20000, now=NOW)
        assert not info.value.transient
        assert "full" in str(info.value)
        (failing,) = store.db.activity.snapshot().failing
        assert (failing.unit, failing.failures, failing.transient) == (
            "NodeRepository.heartbeat",
            1,
            False,
        )


def test_activity_counts_a_unit_waiting_on_the_database(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'te.db'}") as store:
        clock = [100.0]
        store.db.activity.clock = lambda: clock[0]
        inside, leave = threading.Event(), threading.Event()

        @units_of_work
        class Slow:
            def __init__(self, db: Database) -> None:
                self.db = db

            def hold(self) -> None:
                with self.db.tx():
                    inside.set()
                    leave.wait(10)

        holder = threading.Thread(target=Slow(store.db).hold)
        holder.start()
        assert inside.wait(10)
        clock[0] = 145.0
        assert store.db.activity.snapshot().longest_open == 45.0
        leave.set()
        holder.join()
        assert store.db.activity.snapshot().longest_open == 0.0


def test_a_deleted_or_replaced_sqlite_file_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "te.db"
    with Store.open(f"sqlite:///{path}") as store:
        store.db.check_file()  # the same file: fine
        os.unlink(path)
        with pytest.raises(StoreLost, match=r"te\.db was deleted while the engine ran"):
            store.db.check_file()
    with Store.open(f"sqlite:///{path}") as store:
        os.replace(path, tmp_path / "moved.db")
        Store.open(f"sqlite:///{path}").close()  # a new, empty file at the same path
        with pytest.raises(StoreLost, match="was replaced by another file"):
            store.db.check_file()


def test_a_file_created_where_an_engine_ran_before_is_said_to_be_new(tmp_path: Path) -> None:
    path = tmp_path / "te.db"
    with Store.open(f"sqlite:///{path}") as store:
        assert not store.db.replaced_lost_file  # the very first start
        store.lock_single_node()
    with Store.open(f"sqlite:///{path}") as store:
        assert not store.db.replaced_lost_file  # the same file again
    os.unlink(path)
    with Store.open(f"sqlite:///{path}") as store:
        assert store.db.replaced_lost_file  # gone since: this one is new


@pytest.mark.postgres
def test_postgresql_has_no_file_to_check(pg_url: str) -> None:
    with Store.open(pg_url) as store:
        store.db.check_file()
