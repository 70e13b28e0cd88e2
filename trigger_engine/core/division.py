"""How nodes that run the same schedule divide its polls: rendezvous hashing.

Every live node with the same schedule (:func:`schedule_digest`: the same (account,
trigger) jobs at the same intervals) computes, from the same list of node names, the same
owner for each job: the node whose hash of (node, job) is highest (rendezvous, or
highest-random-weight, hashing). Each node then polls only its share. When a node joins,
it takes about 1/N of every other node's jobs and nothing else moves; when one leaves (it
stopped, or its heartbeat expired), its jobs spread over the others and nothing else moves.

The division is an economy, not the guard: the poll's claim (lease, fencing token, the
minimum gap between polls) still decides, so two nodes whose views of the live nodes
differ for a moment at worst both ask for a poll and one is refused. A job neither polls
while their views differ is a job whose owner just left: :meth:`Division.update` returns
the jobs a node gains, so that it can poll at once those whose turn passed meanwhile.

Pure: the node names and the jobs are plain strings; no clock, no database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Job = tuple[str, str]  # (account, trigger)


def schedule_digest(jobs: Iterable[tuple[str, str, float]]) -> str:
    """A short digest of a schedule: its (account, trigger, interval) jobs, in any order.
    Nodes divide their polls only with the live nodes whose digest equals theirs: another
    schedule may lack a job (a trigger disabled there), and its share would go unpolled."""
    text = "\n".join(sorted(f"{a}\x1f{t}\x1f{interval!r}" for a, t, interval in jobs))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _weight(node: str, job: Job) -> int:
    digest = hashlib.blake2b(f"{node}\x1f{job[0]}\x1f{job[1]}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


def owner(job: Job, nodes: Sequence[str]) -> str:
    """The node that polls ``job`` among ``nodes`` (not empty): the highest weight, ties
    (never seen with 64-bit weights) to the smallest name."""
    return max(nodes, key=lambda node: (_weight(node, job), node))


def share(jobs: Iterable[Job], me: str, nodes: Iterable[str]) -> frozenset[Job]:
    """The jobs ``me`` polls when ``nodes`` (``me`` included or not) divide ``jobs``."""
    everyone = sorted({*nodes, me})
    return frozenset(job for job in jobs if owner(job, everyone) == me)


@dataclass
class Division:
    """One node's share of its schedule, as the live nodes it last heard of divide it.

    ``peers``: the other live nodes with the same schedule; while there are none, the node
    polls every job (``mine`` None)."""

    me: str
    jobs: frozenset[Job] = frozenset()
    peers: frozenset[str] = frozenset()
    mine: frozenset[Job] | None = field(default=None)
    _current: bool = field(default=False, repr=False)  # mine is up to date with jobs, peers

    def owns(self, job: Job) -> bool:
        """Whether this node polls ``job`` now."""
        return self.mine is None or job in self.mine

    def update(self, jobs: Iterable[Job], peers: Iterable[str]) -> frozenset[Job]:
        """Divide ``jobs`` again among this node and ``peers``; returns the jobs it gains
        (polled by another node until now, or by nobody: the job is new). A new schedule
        (``jobs`` changed) gains nothing: its jobs are scheduled afresh anyway."""
        jobs = frozenset(jobs)
        peers = frozenset(peers) - {self.me}
        if self._current and jobs == self.jobs and peers == self.peers:
            return frozenset()  # nothing moved: not divided again (30,000 hashes a node)
        before = self.jobs if self.mine is None else self.mine
        same_schedule = jobs == self.jobs
        self.jobs = jobs
        self.peers = peers
        self.mine = share(jobs, self.me, peers) if peers else None
        self._current = True
        if not same_schedule:
            return frozenset()
        after = jobs if self.mine is None else self.mine
        return after - before

    def forget(self) -> None:
        """Poll every job until the next :meth:`update` (a reload changed the schedule)."""
        self.mine = None
        self._current = False
