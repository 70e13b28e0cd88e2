"""What ``/healthz`` and ``/livez`` answer, decided from plain facts (pure).

* **Liveness** (``/livez``; restart me): the scheduler has stopped. A restart is the
  fix; nothing else here is.
* **Readiness and alerting** (``/healthz``): everything liveness checks, plus the
  database does not answer or does not accept a write within :data:`PROBE_TIMEOUT`; a unit
  of work (a claim, a batch of delivery records, a heartbeat) whose last run failed; a
  trigger whose last poll the store failed; a unit of work that has been waiting on the
  database for longer than :data:`STUCK_AFTER` (a lock held elsewhere). A restart does not
  fix these: a person or the database does.

A probe that times out while the database is merely busy (a large poll's transaction
holds SQLite's one connection for a few seconds) is not a failure; one unit waiting past
:data:`STUCK_AFTER` is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trigger_engine.types import ActivitySnapshot

PROBE_TIMEOUT = 5.0  # seconds the health check's write waits for the database
STUCK_AFTER = 30.0  # seconds a unit of work may wait on the database (three heartbeats)


@dataclass(frozen=True)
class Probe:
    """How the health check's write went: ``None`` ok, else why not; ``timed_out``."""

    error: str | None = None
    timed_out: bool = False


@dataclass(frozen=True)
class Health:
    """The verdict: liveness, readiness, and the reasons (one sentence each)."""

    live: bool
    ready: bool
    reasons: tuple[str, ...]

    def body(self) -> dict[str, Any]:
        """The JSON body of the answer."""
        return {
            "status": "ok" if self.ready else "unhealthy",
            "live": self.live,
            "ready": self.ready,
            "reasons": list(self.reasons),
        }


def assess(
    *,
    scheduler_running: bool,
    probe: Probe | None,
    activity: ActivitySnapshot,
    failing_polls: Mapping[str, str],
    stuck_after: float = STUCK_AFTER,
) -> Health:
    """The verdict from the facts. ``probe`` None: liveness only (no database check);
    ``failing_polls``: ``account/trigger`` → why the store failed its last poll."""
    reasons: list[str] = []
    live = scheduler_running
    if not scheduler_running:
        reasons.append("the scheduler is not running")
    if probe is not None:
        stuck = activity.longest_open > stuck_after
        if probe.timed_out and stuck:
            reasons.append(
                f"the database did not accept a write within {PROBE_TIMEOUT:g}s, and the "
                f"engine's work has waited {activity.longest_open:.0f}s on it (a lock held "
                "elsewhere?)"
            )
        elif stuck:
            reasons.append(
                f"the engine's work has waited {activity.longest_open:.0f}s on the database "
                "(a lock held elsewhere?)"
            )
        elif probe.error is not None:
            reasons.append(f"the database failed a write: {probe.error}")
        for failure in activity.failing:
            kind = "unreachable" if failure.transient else "refused"
            for_s = max(0.0, activity.at - failure.since)
            reasons.append(
                f"store {kind} for {failure.unit} ({failure.failures} in a row, for "
                f"{for_s:.0f}s): {failure.reason}"
            )
        for trigger, why in sorted(failing_polls.items()):
            reasons.append(f"the store failed the last poll of {trigger}: {why}")
    ready = not reasons
    return Health(live=live, ready=ready, reasons=tuple(reasons))
