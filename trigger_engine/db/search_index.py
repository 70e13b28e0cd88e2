"""The payload search's index, filled in the background (``events --search``).

A trigram index costs about a hundred times the event row it indexes (2.5 ms of CPU for a
3 KB lead; benchmarks/RESULTS.md), so it is not written in the poll's transaction: an event
only enters ``events_search_backlog`` as it is written (migration 0012's trigger), and
:meth:`SearchIndex.index_batch` moves the oldest of the backlog into the index, one short
transaction per batch. The daemon does that every few seconds (``runtime/jobs.py``),
``run --once`` for a moment after its deliveries. The search reads the index and the
backlog (``db/events.py``), so an event is found whether or not it was indexed yet.

Where the database has no index (migration 0009 could not make one), there is no backlog
either, and every method here does nothing.

SQLite: the FTS5 table ``events_search`` (external content: ``events``), its rowid the
event's ``seq``. PostgreSQL: the table ``events_search`` (``seq``, ``payload``) with a
pg_trgm GIN index; the batch takes its backlog rows ``FOR UPDATE SKIP LOCKED``, so nodes
index disjoint batches.
"""

from __future__ import annotations

from sqlalchemy import Connection, func, select, text

from trigger_engine.db.engine import Database, units_of_work
from trigger_engine.db.schema import SEARCH_BACKLOG, SEARCH_INDEX, SEARCH_TABLE, search_backlog

# The events one transaction indexes: ~10-25 ms of work (SQLite holds its write lock that
# long), a few hundred transactions a minute at most.
INDEX_BATCH = 100

_SQLITE_INDEX = (
    f"INSERT INTO {SEARCH_TABLE}(rowid, payload) "
    f"SELECT e.seq, e.payload FROM {SEARCH_BACKLOG} AS b JOIN events AS e ON e.seq = b.seq "
    "WHERE b.seq <= :upto",
    f"DELETE FROM {SEARCH_BACKLOG} WHERE seq <= :upto",
)
# the newest seq of the batch: the oldest :n of the backlog (None: it is empty)
_SQLITE_UPTO = f"SELECT max(seq) FROM (SELECT seq FROM {SEARCH_BACKLOG} ORDER BY seq LIMIT :n)"

_PG_INDEX = (
    f"WITH taken AS (DELETE FROM {SEARCH_BACKLOG} WHERE seq IN ("
    f"SELECT seq FROM {SEARCH_BACKLOG} ORDER BY seq LIMIT :n FOR UPDATE SKIP LOCKED"
    ") RETURNING seq) "
    f"INSERT INTO {SEARCH_TABLE} (seq, payload) "
    "SELECT e.seq, e.payload FROM events AS e JOIN taken ON taken.seq = e.seq "
    "ON CONFLICT (seq) DO NOTHING"
)


def search_index(conn: Connection) -> str | None:
    """The payload search's index in this database: ``SEARCH_TABLE`` (SQLite's FTS5
    table), ``SEARCH_INDEX`` (PostgreSQL's GIN index on ``events_search``), or None (no
    index was made: the search scans)."""
    if conn.dialect.name == "sqlite":
        found = conn.execute(
            text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name"),
            {"name": SEARCH_BACKLOG},
        ).first()
        return SEARCH_TABLE if found else None
    found = conn.execute(
        text(
            "SELECT 1 FROM pg_indexes WHERE indexname = :name "
            "AND schemaname = ANY (current_schemas(false))"
        ),
        {"name": SEARCH_INDEX},
    ).first()
    return SEARCH_INDEX if found else None


@units_of_work
class SearchIndex:
    """Moves written events from the backlog into the payload search's index."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._indexed: bool | None = None  # None: not looked up yet

    def backlog(self) -> int:
        """How many events wait to be indexed (0 where there is no index)."""
        with self.db.tx() as conn:
            if not self._exists(conn):
                return 0
            return int(conn.execute(select(func.count()).select_from(search_backlog)).scalar_one())

    def index_batch(self, limit: int = INDEX_BATCH) -> int:
        """Index the oldest ``limit`` events of the backlog, in one transaction; returns
        how many left the backlog (0: it is empty, or there is no index)."""
        with self.db.tx() as conn:
            if not self._exists(conn):
                return 0
            if self.db.dialect != "sqlite":
                return int(conn.execute(text(_PG_INDEX), {"n": limit}).rowcount)
            upto = conn.execute(text(_SQLITE_UPTO), {"n": limit}).scalar_one()
            if upto is None:
                return 0
            moved = 0
            for statement in _SQLITE_INDEX:
                moved = conn.execute(text(statement), {"upto": upto}).rowcount
            return int(moved)

    def _exists(self, conn: Connection) -> bool:
        if self._indexed is None:
            self._indexed = search_index(conn) is not None
        return self._indexed
