"""Every exception the engine raises on purpose, grouped by what the caller does next.

    TriggerEngineError
    ├── UsageError            exit 2: bad command line
    ├── ConfigError           exit 2: bad configuration (names file, key or variable)
    └── RuntimeFailure        exit 1: the world let us down
        ├── DatabaseError     the database is unreachable or refused us
        ├── StoreLost         the SQLite file was deleted or replaced under the daemon
        └── SourceError       a poll of the Meet Alfred API failed (see ``states.FailureKind``)

Messages are one sentence for a person, and never contain a secret.
"""

from __future__ import annotations

from trigger_engine.states import FailureKind


class TriggerEngineError(Exception):
    """The root of every error the engine raises on purpose (exit 1 unless said otherwise)."""

    exit_code = 1


class UsageError(TriggerEngineError):
    """A bad command line (exit 2)."""

    exit_code = 2


class ConfigError(TriggerEngineError):
    """A bad configuration (exit 2): the sentence names the file, the key or the variable."""

    exit_code = 2


class RuntimeFailure(TriggerEngineError):
    """The world let us down (exit 1)."""

    exit_code = 1


class DatabaseError(RuntimeFailure):
    """The database is unreachable or refused us. ``transient``: the connection was lost
    or the database was busy, so the same unit of work may simply run again; otherwise
    the database refused what we asked (a full disk, a constraint, a trigger)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class StoreLost(RuntimeFailure):
    """The SQLite file the daemon opened was deleted or replaced while it ran: carrying on
    would write to a file nobody can open again, so the daemon stops (exit 1)."""


class LeaseLost(RuntimeFailure):
    """Another node took over a trigger's poll lease while this one was polling: the
    poll's result is not written (fencing), the new owner polls again."""


class AlreadyRunning(RuntimeFailure):
    """Another process runs the engine on the same SQLite file."""


class SourceError(RuntimeFailure):
    """A poll of the Meet Alfred API failed; ``kind`` says what happens next."""

    def __init__(
        self, kind: FailureKind, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after
