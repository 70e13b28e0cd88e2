"""What the parse keeps exact reaches the store exactly (issue 12, parse and keys together):
two ids past 64 bits are two leads, and a name cut in the middle of an emoji still fires,
on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from tests.integration.test_poller import Upstream, count, make_config, poller_for
from trigger_engine.core.exact_json import parse_json
from trigger_engine.db.schema import events
from trigger_engine.db.store import Store


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    yield s
    s.close()


def payloads(store: Store) -> list[object]:
    with store.db.engine.connect() as conn:
        rows = conn.execute(select(events.c.payload).order_by(events.c.id))
        return [parse_json(row[0].encode()) for row in rows]


@pytest.mark.parametrize(
    ("body", "items"),
    [
        pytest.param(
            b'[{"id": 18446744073709551617}, {"id": 18446744073709551618}]',
            [{"id": 18446744073709551617}, {"id": 18446744073709551618}],
            id="two-ids-past-64-bits",
        ),
        pytest.param(
            b'[{"id": "l-1", "name": "Shaban \\ud83d"}]',
            [{"id": "l-1", "name": "Shaban \ud83d"}],
            id="lone-surrogate",
        ),
    ],
)
def test_every_item_fires_with_its_exact_values(
    db_url: str, store: Store, body: bytes, items: list[object]
) -> None:
    config = make_config(db_url, {"leads": {"on_first_poll": "emit"}})
    upstream = Upstream()
    upstream.reply = lambda _r: httpx.Response(
        200, content=body, headers={"content-type": "application/json"}
    )
    report = poller_for(config, store, upstream).poll(config.accounts[0], config.triggers["leads"])
    assert report.ok, report.error
    assert report.new_events == len(items)
    assert count(store, events) == len(items)
    assert sorted(payloads(store), key=repr) == sorted(items, key=repr)  # in any order
