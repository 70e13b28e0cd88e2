"""The web console in a real browser (headless Chromium through Selenium) against the
real daemon (``python -m trigger_engine run``), the simulator and a real receiver.

The console refuses without the token and logs in with it; a lead is found by name with
the events search, its failed attempts (HTTP 500) are on its page; once the receiver is
healed, Replay sends it again with its original ``webhook-id``; pausing a sink from the
overview holds new deliveries and resuming sends them; a lead named like a script tag is
shown as text. Needs ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (Debian's
``chromium`` and ``chromium-driver``): skipped without them, except in CI
(``TRIGGER_ENGINE_REQUIRE_BROWSER=1``, set by ``.ci/run``, which installs them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ConfigWriter, run_cli, spawn_cli
from tests.e2e.test_delivery_failures import sink
from tests.receiver import Answer, Received, Receiver
from tests.waiting import free_port, wait_until
from trigger_engine.sandbox import SimulatorThread

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TOKEN = "browser-console-token-5e1f0c2a9b"
SCRIPT = "<script>alert(1)</script>"
WAIT = 30.0


def _need_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not missing:
        return
    reason = (
        f"browser tests need {' and '.join(missing)} (apt-get install chromium chromium-driver)"
    )
    if os.environ.get("TRIGGER_ENGINE_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def driver() -> Iterator[Any]:
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(WAIT)
    try:
        yield browser
    finally:
        browser.quit()


class Healable:
    """The receiver's plan: 500 until healed, then 200."""

    def __init__(self) -> None:
        self.healed = threading.Event()

    def __call__(self, _request: Received) -> Answer:
        return Answer(status=200) if self.healed.is_set() else Answer(status=500)


def sent(receiver: Receiver, event_id: str, status: int | None = None) -> list[Received]:
    """The requests carrying ``event_id`` (answered ``status``, when given)."""
    return [r for r in list(receiver.requests) if r.headers.get("webhook-id") == event_id]


def test_the_console_in_a_browser(
    driver: Any,
    simulator: SimulatorThread,
    write_config: ConfigWriter,
    workdir: Path,
    cli_env: dict[str, str],
) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def until(what: str, check: Callable[[Any], Any]) -> Any:
        return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(check, message=what)

    def rows_after_refresh(url: str, css: str) -> Callable[[Any], Any]:
        def check(d: Any) -> Any:
            d.get(url)
            return d.find_elements(By.CSS_SELECTOR, css)

        return check

    def event_rows() -> list[Any]:
        return list(driver.find_elements(By.CSS_SELECTOR, "#events tbody tr[data-event]"))

    def top_row_new(shown: list[str]) -> bool:
        rows = event_rows()
        return bool(rows) and rows[0].get_attribute("data-event") not in shown

    def overview_cell(sink_name: str, field: str) -> str:
        cell = driver.find_element(
            By.CSS_SELECTOR, f'tr[data-sink="{sink_name}"] [data-field="{field}"]'
        )
        return str(cell.text)

    plan = Healable()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with Receiver(plan) as crm:
        write_config(
            base_url=simulator.base_url,
            sinks=sink("crm", crm.url, schedule=("200ms",)),
            interval="200ms",
            engine_extra=f'listen = "127.0.0.1:{port}"\n\n[console]\ntoken = "{TOKEN}"\n',
        )
        seeded = run_cli("run", "--once", cwd=workdir, env=cli_env)  # the first poll remembers
        assert seeded.returncode == 0, seeded.stderr
        lead = simulator.sim.add_lead()
        simulator.sim.set_lead_field(lead["id"], "person.name", "Zelda Browsertest")
        daemon: subprocess.Popen[str] = spawn_cli("run", cwd=workdir, env=cli_env)
        try:

            def serving() -> bool:
                assert daemon.poll() is None, daemon.communicate()[1]
                try:
                    return httpx.get(f"{base}/login", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(serving, WAIT, "the console to answer")

            # without the token: the 401 page, nothing else
            driver.get(f"{base}/events")
            assert driver.title.startswith("Unauthorized")
            assert "Zelda" not in driver.page_source
            driver.find_element(By.LINK_TEXT, "Log in").click()
            until("the login form", lambda d: d.find_elements(By.NAME, "token"))
            driver.find_element(By.NAME, "token").send_keys("not the token")
            driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
            until("the refusal", lambda d: "That is not the token." in d.page_source)
            driver.find_element(By.NAME, "token").send_keys(TOKEN)
            driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
            until("the overview", lambda d: d.title.startswith("Overview"))
            assert driver.find_elements(By.CSS_SELECTOR, 'tr[data-sink="crm"]')

            # the events list, left open: a new lead's event appears at the top, no reload
            driver.get(f"{base}/events")
            shown = [r.get_attribute("data-event") for r in event_rows()]
            simulator.sim.add_lead()
            until("a new event at the top without a reload", lambda d: top_row_new(shown))
            assert driver.find_elements(By.CSS_SELECTOR, "#events tbody tr.new")

            # find the lead by name through the events search, open it
            driver.get(f"{base}/events")
            box = driver.find_element(By.NAME, "search")
            box.send_keys("zelda browsertest")
            box.submit()
            until("the search's result", lambda d: "search=zelda" in d.current_url)
            links = until(
                "the lead's event",
                rows_after_refresh(driver.current_url, "tbody a[href^='/events/']"),
            )
            assert len(links) == 1
            event_id = links[0].text
            links[0].click()
            until("the event's page", lambda d: d.title.startswith(f"Event {event_id}"))

            # its failed attempts: HTTP 500 (two, then dead: a one-step schedule)
            wait_until(lambda: len(sent(crm, event_id)) >= 2, WAIT, "two attempts at crm")
            until(
                "the attempts on the page",
                rows_after_refresh(driver.current_url, "span.status"),
            )
            until(
                "the delivery dead on the page",
                lambda d: (
                    (d.refresh() or True)
                    and d.find_element(By.CSS_SELECTOR, "span.status").text == "dead"
                ),
            )
            cells = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "table td")]
            assert cells.count("500") >= 2, cells

            # heal the receiver, Replay: it arrives with its original webhook-id
            before = len(sent(crm, event_id))
            plan.healed.set()
            driver.find_element(By.XPATH, "//button[text()='Replay']").click()
            until("the replay's message", lambda d: f"replayed {event_id}" in d.page_source)
            wait_until(lambda: len(sent(crm, event_id)) > before, WAIT, "the replayed webhook")
            replayed = sent(crm, event_id)[-1]
            assert replayed.headers["webhook-id"] == event_id
            until(
                "the delivery delivered on the page",
                lambda d: (
                    (d.refresh() or True)
                    and d.find_element(By.CSS_SELECTOR, "span.status").text == "delivered"
                ),
            )

            # pause crm from the overview: a new lead is held; resume: it is delivered
            driver.get(f"{base}/")
            driver.find_element(By.XPATH, "//tr[@data-sink='crm']//button[text()='pause']").click()
            until("the pause's message", lambda d: "sink crm paused" in d.page_source)
            assert overview_cell("crm", "state") == "paused"
            held_before = int(overview_cell("crm", "held"))
            count_before = len(crm.requests)
            simulator.sim.add_lead()
            until(  # the counts follow without a reload
                "the new lead held", lambda d: int(overview_cell("crm", "held")) == held_before + 1
            )
            # the held count links to the dead and held page, which lists it
            driver.find_element(By.CSS_SELECTOR, 'tr[data-sink="crm"] a[data-field="held"]').click()
            until("the held deliveries", lambda d: d.title.startswith("Dead and held"))
            held_rows = driver.find_elements(By.CSS_SELECTOR, "tr[data-delivery]")
            assert len(held_rows) == held_before + 1
            held_id = held_rows[0].find_element(By.CSS_SELECTOR, "a").text
            assert not sent(crm, held_id)
            # its page stays open in a tab while crm is resumed from another
            driver.get(f"{base}/events/{held_id}")
            assert driver.find_element(By.CSS_SELECTOR, "span.status").text == "held"
            held_tab = driver.current_window_handle
            driver.switch_to.new_window("tab")
            driver.get(f"{base}/")
            driver.find_element(By.XPATH, "//tr[@data-sink='crm']//button[text()='resume']").click()
            until("the resume's message", lambda d: "sink crm resumed" in d.page_source)
            wait_until(lambda: bool(sent(crm, held_id)), WAIT, "the held lead delivered")
            driver.close()
            driver.switch_to.window(held_tab)
            until(  # the event's page follows: delivered, its attempt listed, no reload
                "the held lead delivered on its page",
                lambda d: d.find_element(By.CSS_SELECTOR, "span.status").text == "delivered",
            )
            attempts = driver.find_elements(
                By.CSS_SELECTOR, 'section[data-delivery="crm"] tbody tr'
            )
            assert len(attempts) == 1 and "200" in attempts[0].text
            assert len(crm.requests) > count_before
            until(
                "nothing held",
                lambda d: (
                    (d.get(f"{base}/") or True) and int(overview_cell("crm", "held")) == held_before
                ),
            )

            # a lead named like a script tag: shown as text, never run
            hostile = simulator.sim.add_lead()
            simulator.sim.set_lead_field(hostile["id"], "person.name", SCRIPT)
            search = f"{base}/events?search=alert%281%29"
            links = until("the hostile lead's event", rows_after_refresh(search, "tbody a"))
            links[0].click()
            until("its page", lambda d: d.title.startswith("Event "))
            payload = driver.find_element(By.ID, "payload").text
            assert SCRIPT in payload
            scripts = driver.find_elements(By.TAG_NAME, "script")
            assert [s.get_attribute("src") for s in scripts] == [f"{base}/static/console.js"]
            with pytest.raises(NoAlertPresentException):
                driver.switch_to.alert.text  # noqa: B018

            # log out: the session ends; log in again
            driver.find_element(By.XPATH, "//button[text()='Log out']").click()
            until("the logout", lambda d: "Logged out." in d.page_source)
            driver.get(f"{base}/events")
            assert driver.title.startswith("Unauthorized")
            driver.get(f"{base}/login")
            driver.find_element(By.NAME, "token").send_keys(TOKEN)
            driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
            until("the overview again", lambda d: d.title.startswith("Overview"))

            # the daemon stops: the open page says so
            banner = driver.find_element(By.ID, "reachability")
            assert not banner.is_displayed()
            daemon.send_signal(signal.SIGTERM)
            _out, err = daemon.communicate(timeout=30)
            assert daemon.returncode == 0, err
            until("the unreachable banner", lambda d: banner.is_displayed())
            assert banner.text == "daemon unreachable"
        finally:
            if daemon.returncode is None:
                daemon.send_signal(signal.SIGTERM)
                _out, err = daemon.communicate(timeout=30)
                assert daemon.returncode == 0, err
