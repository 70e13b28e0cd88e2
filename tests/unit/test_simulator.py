"""The embedded Meet Alfred simulator is a fake the other tests lean on: it has tests of its own.

HTTP tests run the real server on a free local port (SimulatorThread) and talk to it with httpx.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import orjson
import pytest

from trigger_engine.errors import RuntimeFailure
from trigger_engine.sandbox import Fault, Simulator, SimulatorThread, serve_forever, start

KEY = "s3cret-key"

# Field names copied from the vendor document's samples
# (Meet Alfred's Zapier API documentation, meetalfred-zapier-api.txt), level by level.
LEAD_KEYS = {
    "campaign", "connect_followup", "conversation_urn", "custom_data", "id", "last_action",
    "next_touch_at", "next_touch_index", "person", "request_connect_at", "return_to_campaign",
    "return_to_campaign_date", "status", "tags", "thread_id",
}  # fmt: skip
PERSON_KEYS = {
    "angellist_handle", "current_employer", "current_employer_size", "current_title", "email",
    "facebook_handle", "first_name", "github_handle", "gravatar_handle", "key", "last_name",
    "linkedin_data", "linkedin_handle", "location", "name", "personal_email", "phone",
    "twitter_handle", "work_email",
}  # fmt: skip
LINKEDIN_DATA_KEYS = {
    "connectionLevel", "handle", "headline", "location", "name", "pic", "sharedConnections",
    "subHeadline", "urn",
}  # fmt: skip
LAST_ACTION_KEYS = {
    "campaign_key", "campaign_name", "created_at", "desc", "key", "msg", "msg_created_at",
}  # fmt: skip
CAMPAIGN_KEYS = {
    "auto_approve_leads", "campaign_type", "created_at", "exclude_invited_profiles",
    "exclude_no_photos", "excluded_profiles", "get_new_leads", "key", "limit_exceeded",
    "max_search_amount", "name", "next_search_at", "next_search_index", "num_pending_leads",
    "num_touches", "open_link_only", "premium_only", "removed", "run_state",
    "sales_navigator_url", "search_ended", "search_parameters", "search_url", "status",
    "team_key", "touch_sequence", "updated_at", "user_key",
}  # fmt: skip
SEARCH_PARAMETERS_KEYS = {
    "connections", "currentCompanies", "industries", "keywords", "locations",
    "nonprofitInterests", "pastCompanies", "profileLanguages", "schools", "specifyKeywords",
}  # fmt: skip
SEARCH_CONNECTIONS_KEYS = {"first", "second", "third"}
NONPROFIT_KEYS = {"boardService", "skilledVounteering"}  # sic, as the vendor spells it
PROFILE_LANGUAGES_KEYS = {"english", "french", "polish", "portuguese", "russian", "spanish"}
SPECIFY_KEYWORDS_KEYS = {"company", "firstName", "lastName", "school", "title"}
TOUCH_STEP_KEYS = {"delay_number", "delay_time_unit", "tags", "type"}
CONNECTION_KEYS = {
    "AIM", "BLOG_WEBSITE", "COMPANY_WEBSITE", "GTALK", "ICQ", "OTHER_WEBSITE",
    "PERSONAL_WEBSITE", "PORTFOLIO_WEBSITE", "QQ", "RSS_WEBSITE", "SKYPE", "WECHAT",
    "YAHOO_MESSENGER", "address", "birthday", "companyName", "connectedAt", "conversation_id",
    "degree", "email", "entityUrn", "fieldOfStudy", "firstName", "headline", "id",
    "industryCode", "languages", "lastName", "locationName", "name", "notes", "objectUrn",
    "openLink", "phone", "picture", "postalCode", "premium", "publicIdentifier", "schoolName",
    "skills", "startedMonth", "startedYear", "tags", "tenureMonths", "tenureYears", "title",
    "trackingId", "twitter", "versionTag",
}  # fmt: skip

URN = re.compile(r"ACoAA[A-Za-z0-9_-]{34}")
SQL_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00:00")  # 2020-04-17 05:51:54+00:00
HTTP_TIME = re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d [A-Z][a-z]{2} \d{4} [\d:]{8} GMT")


@pytest.fixture
def sim() -> Simulator:
    return Simulator(api_key=KEY, seed=1)


@pytest.fixture
def server(sim: Simulator) -> Iterator[SimulatorThread]:
    with SimulatorThread(sim) as running:
        yield running


@pytest.fixture
def client(server: SimulatorThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        yield http


def get(client: httpx.Client, path: str, **params: Any) -> httpx.Response:
    return client.get(path, params={"api_key": KEY, **params})


# ----------------------------------------------------------------- record shapes


def assert_campaign_shape(campaign: dict[str, Any]) -> None:
    assert set(campaign) == CAMPAIGN_KEYS
    search = campaign["search_parameters"]
    assert set(search) == SEARCH_PARAMETERS_KEYS
    assert set(search["connections"]) == SEARCH_CONNECTIONS_KEYS
    assert set(search["nonprofitInterests"]) == NONPROFIT_KEYS
    assert set(search["profileLanguages"]) == PROFILE_LANGUAGES_KEYS
    assert set(search["specifyKeywords"]) == SPECIFY_KEYWORDS_KEYS
    assert set(campaign["touch_sequence"]) == {"sequence"}
    steps = campaign["touch_sequence"]["sequence"]
    assert steps
    assert all(set(step) == TOUCH_STEP_KEYS for step in steps)
    assert campaign["num_touches"] == len(steps)
    assert type(campaign["key"]) is int
    for field in ("created_at", "updated_at", "next_search_at"):
        assert SQL_TIME.fullmatch(campaign[field]), field


def test_leads_have_every_field_of_the_vendor_sample(client: httpx.Client) -> None:
    leads = get(client, "/leads").json()
    assert len(leads) == 3
    for lead in leads:
        assert set(lead) == LEAD_KEYS
        assert set(lead["person"]) == PERSON_KEYS
        assert set(lead["person"]["linkedin_data"]) == LINKEDIN_DATA_KEYS
        assert set(lead["last_action"]) == LAST_ACTION_KEYS
        assert_campaign_shape(lead["campaign"])
        assert isinstance(lead["custom_data"], dict)
        assert isinstance(lead["tags"], list)
        assert SQL_TIME.fullmatch(lead["last_action"]["created_at"])


def test_connections_have_every_field_of_the_vendor_sample(client: httpx.Client) -> None:
    connections = get(client, "/connections").json()
    assert len(connections) == 3
    for connection in connections:
        assert set(connection) == CONNECTION_KEYS
        assert connection["degree"] == 1
        assert HTTP_TIME.fullmatch(connection["connectedAt"])
        assert email.utils.parsedate_to_datetime(connection["connectedAt"]).tzinfo is not None


def test_campaigns_have_the_shape_of_the_campaign_inside_a_lead(client: httpx.Client) -> None:
    campaigns = get(client, "/campaigns").json()
    assert len(campaigns) == 3
    for campaign in campaigns:
        assert_campaign_shape(campaign)


def test_ids_look_like_linkedin_urns_and_agree_with_each_other() -> None:
    sim = Simulator(seed=3, initial=50)
    for lead in sim.leads:
        assert URN.fullmatch(lead["id"])
        assert len(lead["id"]) == 39
        assert lead["id"] == lead["person"]["key"] == lead["person"]["linkedin_data"]["urn"]
    for connection in sim.connections:
        assert URN.fullmatch(connection["id"])
        assert connection["id"] == connection["entityUrn"]
    ids = [item["id"] for item in sim.leads + sim.connections]
    assert len(set(ids)) == len(ids)
    keys = [campaign["key"] for campaign in sim.campaigns]
    assert len(set(keys)) == len(keys)


def test_a_leads_campaign_is_a_copy_of_one_of_the_simulators_campaigns() -> None:
    sim = Simulator(seed=4, initial=10)
    by_key = {campaign["key"]: campaign for campaign in sim.campaigns}
    for lead in sim.leads:
        source = by_key[lead["campaign"]["key"]]
        assert lead["campaign"] == source
        assert lead["campaign"] is not source
        assert lead["last_action"]["campaign_key"] == source["key"]
        assert lead["last_action"]["campaign_name"] == source["name"]


def test_names_are_varied_and_unicode_survives_the_wire(client: httpx.Client) -> None:
    sim = Simulator(seed=5, initial=300)
    names = {lead["person"]["name"] for lead in sim.leads}
    assert len(names) > 50
    assert any(not name.isascii() for name in names)
    assert any(re.search("[\u0400-\u04ff]", name) for name in names)  # Cyrillic
    assert any(re.search("[\u4e00-\u9fff]", name) for name in names)  # CJK
    with SimulatorThread(sim) as other, httpx.Client(base_url=other.base_url) as http:
        response = http.get("/leads", params={"api_key": "demo"})
    assert response.json() == sim.leads


# ----------------------------------------------------------------- the API key


def test_missing_or_wrong_key_is_refused_with_401(client: httpx.Client) -> None:
    for params in ({}, {"api_key": "wrong"}, {"api_key": ""}, {"apikey": KEY}):
        response = client.get("/leads", params=params)
        assert response.status_code == 401, params
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {"error": "invalid api key"}
    assert get(client, "/leads").status_code == 200


def test_the_key_parameter_name_is_configurable() -> None:
    sim = Simulator(api_key=KEY, auth_param="token")
    with SimulatorThread(sim) as server, httpx.Client(base_url=server.base_url) as http:
        assert http.get("/campaigns", params={"api_key": KEY}).status_code == 401
        assert http.get("/campaigns", params={"token": KEY}).status_code == 200


def test_the_key_never_reaches_a_log(
    client: httpx.Client, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        assert get(client, "/leads").status_code == 200
        assert client.get("/leads", params={"api_key": "a-wrong-guess"}).status_code == 401
        sim.inject(Fault(status=500))
        assert get(client, "/leads").status_code == 500
    # The client's own loggers (httpx logs every URL at INFO) are not the simulator's.
    server_side = [
        record.getMessage()
        for record in caplog.records
        if not record.name.startswith(("httpx", "httpcore"))
    ]
    assert not any(KEY in line or "a-wrong-guess" in line for line in server_side)


def test_the_request_log_hides_the_key(client: httpx.Client, sim: Simulator) -> None:
    get(client, "/leads", page="1")
    client.get("/connections", params={"api_key": "a-wrong-guess"})
    assert sim.requests == [
        ("/leads", {"api_key": "***", "page": "1"}),
        ("/connections", {"api_key": "***"}),
    ]
    assert KEY not in repr(sim.requests)


# ----------------------------------------------------------------- lists and their order


def test_lists_are_newest_first_and_new_items_show_up_on_the_next_request(
    client: httpx.Client, sim: Simulator
) -> None:
    before = [lead["id"] for lead in get(client, "/leads").json()]
    added = [sim.add_lead()["id"] for _ in range(3)]
    after = [lead["id"] for lead in get(client, "/leads").json()]
    assert after == [*reversed(added), *before]
    assert len(set(after)) == len(after)

    connection = sim.add_connection()
    assert get(client, "/connections").json()[0] == connection
    campaign = sim.add_campaign()
    assert get(client, "/campaigns").json()[0] == campaign


def test_add_leads_in_bulk_keeps_ids_unique_and_order_newest_first() -> None:
    sim = Simulator(seed=6, initial=2)
    sim.add_leads(1000)
    assert len(sim.leads) == 1002
    assert len({lead["id"] for lead in sim.leads}) == 1002
    created = [lead["last_action"]["created_at"] for lead in sim.leads]
    assert created == sorted(created, reverse=True)


def test_served_body_is_exactly_the_list(client: httpx.Client, sim: Simulator) -> None:
    first = get(client, "/leads")
    assert first.headers["content-type"] == "application/json"
    assert first.content == get(client, "/leads").content  # cached body, same bytes
    sim.add_lead()
    assert orjson.loads(get(client, "/leads").content) == sim.leads


def test_trailing_slash_and_the_vendor_prefix_are_served_too(client: httpx.Client) -> None:
    expected = get(client, "/leads").json()
    assert get(client, "/leads/").json() == expected
    assert get(client, "/api/integrations/zapier/leads").json() == expected
    assert get(client, "/nothing-here").status_code == 404


def test_tick_adds_a_lead_every_time_a_connection_every_2nd_a_campaign_every_5th() -> None:
    sim = Simulator(seed=2)
    kinds = [[kind for kind, _ in sim.tick()] for _ in range(10)]
    assert kinds[0] == ["leads"]
    assert kinds[1] == ["leads", "connections"]
    assert kinds[4] == ["campaigns", "leads"]
    assert (len(sim.leads), len(sim.connections), len(sim.campaigns)) == (13, 8, 5)


def test_the_same_seed_gives_the_same_data() -> None:
    def build(seed: int) -> Simulator:
        sim = Simulator(seed=seed, initial=5)
        sim.add_leads(20)
        sim.add_connection()
        sim.tick()
        return sim

    one, two, other = build(42), build(42), build(43)
    assert one.campaigns == two.campaigns
    assert one.leads == two.leads
    assert one.connections == two.connections
    assert {lead["id"] for lead in one.leads}.isdisjoint(lead["id"] for lead in other.leads)


def test_set_lead_field_changes_one_lead_only(client: httpx.Client, sim: Simulator) -> None:
    sim.add_leads(20)  # one batch: its leads share campaign snapshots
    target, *others = sim.leads
    shared = [lead for lead in others if lead["campaign"] is target["campaign"]]
    assert shared, "some lead of the batch shares the target's campaign snapshot"
    campaign_name = target["campaign"]["name"]
    order = [lead["id"] for lead in sim.leads]

    get(client, "/leads")  # fill the body cache
    sim.set_lead_field(target["id"], "status", "replied")
    sim.set_lead_field(target["id"], "campaign.name", "Renamed")
    sim.set_lead_field(target["id"], "custom_data.crm_id", 7)

    served = get(client, "/leads").json()
    assert [lead["id"] for lead in served] == order
    assert served[0]["status"] == "replied"
    assert served[0]["campaign"]["name"] == "Renamed"
    assert served[0]["custom_data"]["crm_id"] == 7
    assert all(lead["campaign"]["name"] == campaign_name for lead in shared)
    assert campaign_name in {campaign["name"] for campaign in sim.campaigns}

    with pytest.raises(KeyError):
        sim.set_lead_field("ACoAA-no-such-lead", "status", "x")
    with pytest.raises(KeyError):
        sim.set_lead_field(target["id"], "status.deeper", "x")


# ----------------------------------------------------------------- pagination


def test_pagination_serves_one_page_at_a_time() -> None:
    sim = Simulator(api_key=KEY, initial=150)
    with SimulatorThread(sim) as server, httpx.Client(base_url=server.base_url) as http:
        ids = [lead["id"] for lead in sim.leads]
        page = get(http, "/leads", page="1").json()
        assert [lead["id"] for lead in page] == ids[:100]  # default per_page 100
        assert [lead["id"] for lead in get(http, "/leads", page="2").json()] == ids[100:]
        assert get(http, "/leads", page="3").json() == []
        small = get(http, "/leads", page="2", per_page="7").json()
        assert [lead["id"] for lead in small] == ids[7:14]
        assert len(get(http, "/leads", per_page="7").json()) == 150  # no page: everything
        for bad in ({"page": "0"}, {"page": "x"}, {"page": "1", "per_page": "0"}):
            response = get(http, "/leads", **bad)
            assert response.status_code == 400, bad
            assert "error" in response.json()


# ----------------------------------------------------------------- faults


def test_a_500_is_served_count_times_then_the_api_recovers(
    client: httpx.Client, sim: Simulator
) -> None:
    fault = Fault(status=500, count=2)
    sim.inject(fault)
    assert [get(client, "/leads").status_code for _ in range(3)] == [500, 500, 200]
    assert fault.count == 2  # the caller's object is not used up
    assert sim.pending_faults() == []


def test_a_429_carries_retry_after(client: httpx.Client, sim: Simulator) -> None:
    sim.inject(Fault(status=429, retry_after="7"))
    response = get(client, "/campaigns")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert "error" in response.json()


def test_an_html_page_with_200(client: httpx.Client, sim: Simulator) -> None:
    sim.inject(Fault(status=200, body=b"<html>oops</html>", content_type="text/html"))
    response = get(client, "/leads")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == "<html>oops</html>"


def test_truncated_json(client: httpx.Client, sim: Simulator) -> None:
    sim.inject(Fault(status=200, body=b'[{"id": "a"'))
    response = get(client, "/leads")
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert get(client, "/leads").json() == sim.leads


def test_a_delay_is_honoured(client: httpx.Client, sim: Simulator) -> None:
    sim.inject(Fault(status=200, delay=0.2))  # no body and a 2xx: the normal answer, late
    started = time.monotonic()
    response = get(client, "/leads")
    assert time.monotonic() - started >= 0.2
    assert response.json() == sim.leads

    sim.inject(Fault(status=503, delay=0.2))
    started = time.monotonic()
    assert get(client, "/leads").status_code == 503
    assert time.monotonic() - started >= 0.2


def test_faults_apply_to_their_paths_first_in_first_out(
    client: httpx.Client, sim: Simulator
) -> None:
    sim.inject(Fault(status=502, paths=("/leads",)))
    sim.inject(Fault(status=503))
    sim.inject(Fault(status=504, paths=("connections",)))
    assert get(client, "/connections").status_code == 503  # the first that applies
    assert get(client, "/campaigns").status_code == 200  # none left applies
    assert get(client, "/connections").status_code == 504
    assert [fault.status for fault in sim.pending_faults()] == [502]
    assert get(client, "/api/integrations/zapier/leads").status_code == 502
    assert get(client, "/leads").status_code == 200


def test_a_fault_comes_before_the_key_check(client: httpx.Client, sim: Simulator) -> None:
    sim.inject(Fault(status=502))
    assert client.get("/leads").status_code == 502  # the outage answers before auth
    assert client.get("/leads").status_code == 401


@pytest.mark.parametrize(
    "kwargs",
    [{"status": 99}, {"status": 600}, {"count": 0}, {"delay": -1.0}, {"paths": ("/nope",)}],
)
def test_impossible_faults_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="fault"):
        Fault(**kwargs)


# ----------------------------------------------------------------- control endpoints


def test_control_adds_leads_without_an_api_key(client: httpx.Client, sim: Simulator) -> None:
    response = client.post("/_control/leads", params={"n": "5"})
    assert response.status_code == 200
    assert response.json() == {"added": 5, "total": 8}
    assert len(get(client, "/leads").json()) == 8
    assert client.post("/_control/connections").json() == {"added": 1, "total": 4}
    assert client.post("/_control/campaigns", params={"n": "2"}).json()["total"] == 5
    assert client.post("/_control/leads", params={"n": "0"}).status_code == 400
    assert client.post("/_control/widgets").status_code == 404


def test_control_queues_a_fault_from_json(client: httpx.Client, sim: Simulator) -> None:
    response = client.post(
        "/_control/fault",
        json={
            "status": 200,
            "count": 2,
            "body": "<html>maintenance</html>",
            "content_type": "text/html",
            "paths": ["/leads"],
        },
    )
    assert response.status_code == 200
    assert response.json()["pending_faults"] == 1
    assert get(client, "/connections").status_code == 200
    for _ in range(2):
        assert get(client, "/leads").text == "<html>maintenance</html>"
    assert get(client, "/leads").json() == sim.leads

    client.post("/_control/fault", json={"status": 429, "retry_after": 30})
    assert get(client, "/campaigns").headers["retry-after"] == "30"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"colour": "red"}',
        b'{"status": "500"}',
        b'{"status": 700}',
        b'{"paths": "/leads"}',
        b'{"delay": true}',
    ],
)
def test_control_refuses_a_bad_fault(client: httpx.Client, sim: Simulator, body: bytes) -> None:
    response = client.post("/_control/fault", content=body)
    assert response.status_code == 400
    assert "error" in response.json()
    assert sim.pending_faults() == []


# ----------------------------------------------------------------- running the server


def test_new_items_arrive_over_time_with_an_interval(sim: Simulator) -> None:
    with (
        SimulatorThread(sim, new_item_interval=0.02) as server,
        httpx.Client(base_url=server.base_url) as http,
    ):
        deadline = time.monotonic() + 10
        while len(get(http, "/leads").json()) < 6:
            assert time.monotonic() < deadline, "no new leads within 10 s"
            time.sleep(0.01)
    assert len(sim.connections) >= 4


def test_mutation_from_another_thread_while_serving(client: httpx.Client, sim: Simulator) -> None:
    done = threading.Event()

    def writer() -> None:
        for _ in range(200):
            sim.add_lead()
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen = 0
    while not done.is_set():
        leads = get(client, "/leads").json()
        assert len(leads) >= seen
        seen = len(leads)
    thread.join()
    assert len(get(client, "/leads").json()) == 203


def test_a_busy_port_is_reported_by_the_thread(server: SimulatorThread) -> None:
    busy = SimulatorThread(Simulator(), port=server.port)
    with pytest.raises(OSError, match="address already in use"), busy:
        pass


def test_start_serves_on_the_callers_event_loop() -> None:
    async def scenario() -> list[Any]:
        runner, port = await start(Simulator(api_key=KEY))
        try:
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{port}/campaigns"
                async with session.get(url, params={"api_key": KEY}) as response:
                    assert response.status == 200
                    body: list[Any] = await response.json()
                    return body
        finally:
            await runner.cleanup()

    assert len(asyncio.run(scenario())) == 3


def test_serve_forever_reports_a_busy_port(server: SimulatorThread) -> None:
    with pytest.raises(RuntimeFailure, match=f"127.0.0.1:{server.port}"):
        serve_forever(port=server.port, api_key="k", new_item_interval=0, seed=1)


def test_serve_forever_prints_its_url_adds_items_and_stops_on_sigterm() -> None:
    code = (
        "from trigger_engine.sandbox import serve_forever\n"
        "raise SystemExit(serve_forever(port=0, api_key='k', new_item_interval=0.02, seed=9))\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            match = re.fullmatch(
                r"Meet Alfred simulator on (http://127\.0\.0\.1:\d+) "
                r"\(api key parameter api_key=k\)\n",
                line,
            )
            assert match, line
            with httpx.Client(base_url=match.group(1)) as http:
                deadline = time.monotonic() + 10
                while len(http.get("/leads", params={"api_key": "k"}).json()) <= 3:
                    assert time.monotonic() < deadline, "no new leads within 10 s"
                    time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, stderr
    assert stderr == ""
