"""What the daemon runs, and with what, as plain functions of the configuration: the
(account, trigger) polls, the poll workers and database connections, a poll's lease, the
node's name. No scheduler here: ``run --once`` needs these and nothing of APScheduler,
which the serving daemon alone imports (:mod:`trigger_engine.runtime.jobs`)."""

from __future__ import annotations

import os
import socket

from trigger_engine.config import Account, Config, TriggerSettings
from trigger_engine.core import division

NODES_KEPT_FOR = 24 * 3600.0  # seconds a stopped (or vanished) node stays listed in status
MIN_GAP = 0.9  # a trigger is not polled again before this fraction of its interval
# Default [engine] poll_workers: SQLite has one connection (its transactions queue up
# anyway; the workers overlap HTTP waits), PostgreSQL a pool of 5 (+10 overflow).
POLL_WORKERS = {"sqlite": 4, "postgresql": 8}
# PostgreSQL's pool keeps a connection for each poll worker and these more: the dispatcher,
# the heartbeat, the HTTP API's reads, a retention sweep. A worker that waits for a
# connection delays its poll, and a pool smaller than the workers opened and closed an
# overflow connection for many polls (benchmarks/RESULTS.md, "schedule on PostgreSQL").
POOL_SPARE = 4
# The payload search's indexer (db/search_index.py): every SEARCH_INDEX_EVERY seconds the
# serving daemon indexes what polls wrote since, for SEARCH_INDEX_FOR seconds at most (a
# first poll that fired 100,000 leads takes a few minutes of runs to index; the search
# reads the backlog meanwhile); ``run --once`` gives it SEARCH_INDEX_ONCE_FOR seconds after
# its deliveries.
SEARCH_INDEX_EVERY = 5.0
SEARCH_INDEX_FOR = 2.0
SEARCH_INDEX_ONCE_FOR = 1.0


def node_name() -> str:
    """Who holds a claim: host and pid, unique among live processes."""
    return f"{socket.gethostname()}:{os.getpid()}"


def poll_jobs(config: Config) -> list[tuple[Account, TriggerSettings]]:
    """Every (account, trigger) to poll: each enabled trigger of each account."""
    return [
        (account, trigger)
        for account in config.accounts
        for trigger in config.triggers.values()
        if trigger.enabled
    ]


def job_keys(config: Config) -> frozenset[division.Job]:
    """The (account, trigger) names of :func:`poll_jobs`."""
    return frozenset((account.name, trigger.name) for account, trigger in poll_jobs(config))


def schedule_digest(config: Config) -> str:
    """The digest of this schedule (its jobs and their intervals), which every heartbeat
    writes: live nodes with the same one divide its polls (:mod:`~trigger_engine.core.division`)."""
    return division.schedule_digest(
        (account.name, trigger.name, trigger.interval) for account, trigger in poll_jobs(config)
    )


def poll_workers(config: Config, dialect: str) -> int:
    """How many polls run at once: ``[engine] poll_workers``, else by database."""
    configured = config.engine.poll_workers
    return configured if configured is not None else POLL_WORKERS.get(dialect, 4)


def pool_size(config: Config) -> int:
    """The connections the daemon's database pool keeps open (PostgreSQL; SQLite has one):
    one per poll worker and :data:`POOL_SPARE` more."""
    return poll_workers(config, "postgresql") + POOL_SPARE


def poll_lease(config: Config, trigger: TriggerSettings) -> float:
    """How long a poll lease lasts: ``[engine] lease`` beyond the longest the requests of
    one poll may take, so that a slow poll is not taken over while it runs."""
    pages = trigger.pagination.max_pages if trigger.pagination else 1
    return config.engine.lease + config.source.timeout * pages
