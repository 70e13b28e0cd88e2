"""The collector is held while any large poll runs and restored after the last one."""

from __future__ import annotations

import gc
import threading

from freezegun import freeze_time

from trigger_engine.polling.gc_pause import COLLECT_EVERY, gc_paused


def test_overlapping_pauses_restore_the_collector_only_after_the_last() -> None:
    assert gc.isenabled()
    inside = threading.Event()
    release = threading.Event()

    def other_poll() -> None:
        with gc_paused():
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=other_poll)
    with gc_paused():
        assert not gc.isenabled()
        thread.start()
        inside.wait(5)
    assert not gc.isenabled()  # the other poll still holds it
    release.set()
    thread.join(5)
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled() -> None:
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_collector_comes_back_after_an_error() -> None:
    try:
        with gc_paused():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled()


def test_overlapping_holds_still_collect_the_young_generations_every_second() -> None:
    collections: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    def short_poll() -> None:
        with gc_paused():
            pass

    with freeze_time("2026-11-27 10:00:00") as clock:
        gc.callbacks.append(seen)
        try:
            with gc_paused():  # a long poll
                short_poll()
                assert collections == []  # less than a second since the hold began
                clock.tick(COLLECT_EVERY)
                short_poll()  # released while the long poll holds on: young ones collected
                assert collections == [1]
                short_poll()
                assert collections == [1]  # the next only a second after that one
                assert not gc.isenabled()
        finally:
            gc.callbacks.remove(seen)
    assert gc.isenabled()
