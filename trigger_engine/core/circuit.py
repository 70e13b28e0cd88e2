"""A sink's health as the dispatcher sees it: up, or down and probed. Pure: the clock is
passed in.

Each delivery retries on its own schedule (:mod:`.retry`), so a receiver that is down for
a minute gets its backlog only at the next step of that schedule, five minutes later by
default (Svix's schedule; measured: 311 s after a 70 s outage). A sink whose attempts
failed ``down_after`` times in a row (no answer, a 5xx, 408 or 429, across deliveries; an
answer such as 400 means the receiver is there) is *down*: instead of sending every due
delivery, the dispatcher sends one probe at a time, one every ``probe_every`` seconds (the
first step of the sink's retry schedule), and the first success brings the sink *up*: every
delivery waiting for it falls due at once and is sent in order, bounded by
``max_in_flight``. The receiver gets at most one request per step while it is down, and
its backlog within one step of its return.

Each process keeps its own view (several nodes sharing PostgreSQL each probe on their own;
the receiver then gets at most one probe per step from each node).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

DOWN_AFTER = 3  # failed attempts in a row that make a sink down
MIN_PROBE_EVERY = 1.0  # seconds: never probe more often than this
DEFAULT_PROBE_EVERY = 5.0  # a sink whose schedule has no step (no retries)


class Health(StrEnum):
    """A sink's circuit: ``up`` (send what is due) or ``down`` (probe it)."""

    UP = "up"
    DOWN = "down"


class Change(StrEnum):
    """What one attempt's result changed."""

    WENT_DOWN = "went_down"
    CAME_BACK = "came_back"


def probe_interval(schedule: tuple[float, ...]) -> float:
    """Seconds between probes of a down sink: its schedule's first step (at least
    ``MIN_PROBE_EVERY``)."""
    first = schedule[0] if schedule else DEFAULT_PROBE_EVERY
    return max(MIN_PROBE_EVERY, first)


@dataclass
class SinkHealth:
    """One sink's circuit. Feed it every attempt's result (:meth:`observe`); while it is
    down, ask :meth:`may_probe` before sending, and call :meth:`probe_started`."""

    probe_every: float
    down_after: int = DOWN_AFTER
    state: Health = Health.UP
    failures: int = 0  # failed attempts in a row
    down_since: datetime | None = None
    next_probe_at: datetime | None = None
    probing: bool = False  # a probe is in flight
    probes: int = 0  # probes sent since it went down

    @property
    def down(self) -> bool:
        """Whether the sink is down (probed, not sent to)."""
        return self.state is Health.DOWN

    @property
    def steady(self) -> bool:
        """Up, with no failure counted: an answer that is not a probe's changes nothing
        (:meth:`observe` would return None and leave every field as it is)."""
        return self.state is Health.UP and self.failures == 0

    def observe(self, *, failed: bool, probe: bool, now: datetime) -> Change | None:
        """Count one attempt's result: ``failed`` (no answer, 5xx, 408, 429), else an
        answer (a 2xx, or a 4xx: the receiver is there). ``probe``: it was this circuit's
        probe. Returns the change it made, if any."""
        if probe:
            self.probing = False
        if not failed:
            self.failures = 0
            if self.state is Health.DOWN:
                # the receiver answers again: everything waiting goes out now
                self.state, self.down_since, self.next_probe_at = Health.UP, None, None
                return Change.CAME_BACK
            return None
        self.failures += 1
        if self.state is Health.UP and self.failures >= self.down_after:
            self.state, self.down_since, self.probes = Health.DOWN, now, 0
            self.next_probe_at = now + timedelta(seconds=self.probe_every)
            return Change.WENT_DOWN
        if self.state is Health.DOWN and probe:
            self.next_probe_at = now + timedelta(seconds=self.probe_every)
        return None

    def may_probe(self, now: datetime) -> bool:
        """While down: whether a probe may start now (none in flight, its time come)."""
        return (
            self.state is Health.DOWN
            and not self.probing
            and (self.next_probe_at is None or now >= self.next_probe_at)
        )

    def probe_started(self) -> None:
        """A probe was sent: no other until its result is in."""
        self.probing = True
        self.probes += 1

    def probe_abandoned(self, now: datetime) -> None:
        """The probe could not be sent (nothing waiting, or it was given back): try again
        one step later."""
        self.probing = False
        self.next_probe_at = now + timedelta(seconds=self.probe_every)

    def seconds_to_probe(self, now: datetime) -> float | None:
        """While down and not probing: seconds until the next probe may start."""
        if self.state is not Health.DOWN or self.probing or self.next_probe_at is None:
            return None
        return max(0.0, (self.next_probe_at - now).total_seconds())
