"""The division of a schedule's polls among live nodes (core/division.py): every job has
exactly one owner, the split is even, a node joining or leaving moves only its own share,
and a node is told which jobs it gains."""

from __future__ import annotations

import pytest

from trigger_engine.core.division import Division, Job, owner, schedule_digest, share

JOBS: list[Job] = [(f"acct{i:04d}", t) for i in range(1000) for t in ("leads", "campaigns")]


@pytest.mark.parametrize("nodes", [["a"], ["a", "b"], ["a", "b", "c"], ["h1:10", "h2:10", "h1:11"]])
def test_every_job_has_exactly_one_owner_whichever_node_computes_it(nodes: list[str]) -> None:
    shares = [share(JOBS, me, nodes) for me in nodes]
    assert sum(len(s) for s in shares) == len(JOBS)
    assert set().union(*shares) == set(JOBS)
    # a node computes the same division whatever order it lists the nodes in
    assert share(JOBS, nodes[0], list(reversed(nodes))) == shares[0]


@pytest.mark.parametrize("count", [2, 3, 4])
def test_the_split_is_even(count: int) -> None:
    nodes = [f"host:{100 + i}" for i in range(count)]
    sizes = [len(share(JOBS, me, nodes)) for me in nodes]
    expected = len(JOBS) / count
    assert all(abs(size - expected) < 0.1 * expected for size in sizes), sizes


def test_a_node_leaving_moves_only_its_own_jobs_and_one_joining_takes_only_from_others() -> None:
    three = ["a", "b", "c"]
    before = {job: owner(job, three) for job in JOBS}
    after = {job: owner(job, ["a", "b"]) for job in JOBS}
    moved = {job for job in JOBS if before[job] != after[job]}
    assert moved == {job for job in JOBS if before[job] == "c"}
    # and back: c joining takes jobs from a and b, and no job moves between a and b
    assert all(before[job] in (after[job], "c") for job in JOBS)


def test_a_division_tells_what_a_node_gains_when_a_peer_leaves() -> None:
    a = Division("a")
    assert a.owns(JOBS[0])  # before any heartbeat: every job
    assert a.update(JOBS, []) == frozenset()  # the first division gains nothing
    assert a.mine is None
    assert a.update(JOBS, ["b", "a"]) == frozenset()  # b joins: a only loses
    assert a.mine == share(JOBS, "a", ["b"])
    assert not all(a.owns(job) for job in JOBS)
    gained = a.update(JOBS, [])  # b left: a gains b's share
    assert gained == frozenset(JOBS) - share(JOBS, "a", ["b"])
    assert a.mine is None and all(a.owns(job) for job in JOBS)


def test_a_division_gains_nothing_from_a_new_schedule_and_polls_all_after_forget() -> None:
    a = Division("a")
    a.update(JOBS, ["b"])
    a.forget()  # a reload: every job until the next heartbeat
    assert all(a.owns(job) for job in JOBS)
    assert a.update(JOBS[:10], ["b"]) == frozenset()  # the schedule changed
    assert a.mine == share(JOBS[:10], "a", ["b"])
    assert a.update(JOBS[:10], ["b"]) == frozenset()  # nothing moved


def test_the_schedule_digest_changes_with_a_job_or_an_interval_not_with_the_order() -> None:
    jobs = [("acme", "leads", 300.0), ("acme", "campaigns", 60.0)]
    assert schedule_digest(jobs) == schedule_digest(list(reversed(jobs)))
    assert schedule_digest(jobs) != schedule_digest(jobs[:1])
    assert schedule_digest(jobs) != schedule_digest(
        [("acme", "leads", 300.0), ("acme", "campaigns", 61.0)]
    )
