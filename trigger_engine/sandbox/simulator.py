"""The embedded Meet Alfred simulator: a local stand-in for the Zapier API of Meet Alfred.

It serves what the vendor document describes, on 127.0.0.1 (``start`` takes another host)::

    GET /campaigns?api_key=KEY     every campaign, newest first
    GET /leads?api_key=KEY         every lead, newest first
    GET /connections?api_key=KEY   every LinkedIn connection, newest first

The same lists are also served with a trailing slash and under the vendor's own prefix
(``/api/integrations/zapier/leads``), so a ``base_url`` of ``http://127.0.0.1:N`` or
``http://127.0.0.1:N/api/integrations/zapier`` both work. The key travels as the query
parameter named ``auth_param`` (default ``api_key``); a missing or wrong key gets
``401 {"error": "invalid api key"}``. Optional pagination: ``page`` (1-based) and
``per_page`` (default 100) return one slice; a page past the end is ``[]``; without ``page``
the whole list is served, as the real API does.

Records have every field of the vendor's samples, with varied, deterministic values (one
``random.Random(seed)`` and a simulated clock, never the wall clock). Leads and connections are
identified by a 39-character LinkedIn-URN-like id; campaigns by a unique integer ``key``.
Records share unchanging sub-objects (a lead's ``campaign`` snapshot) to keep bulk creation
fast: change records through :meth:`Simulator.set_lead_field`, which copies before writing,
not by assigning into the dicts of :attr:`Simulator.leads`.

Faults (:class:`Fault`) are queued with :meth:`Simulator.inject` and served instead of the
normal answer, first in, first out, to the requests they apply to (the oldest queued fault
whose ``paths`` match). They answer before the key is checked, as an outage would. A fault
without a body and with a 2xx status is a pure delay: the normal answer, late.

Control endpoints, for someone running ``trigger-engine simulator`` with curl. They take **no
API key**: the simulator is a local test tool and only listens on the loopback interface::

    POST /_control/fault      body: a JSON object with Fault's fields ("body" as a string)
    POST /_control/leads?n=5  add n leads now (also /_control/connections and /_control/campaigns)

Requests to the list endpoints are recorded in :attr:`Simulator.requests` with the key's value
replaced by ``***``. The key never reaches a log: the aiohttp access log (which would print the
query string) is turned off.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import email.utils
import functools
import secrets
import signal
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from random import Random
from types import TracebackType
from typing import Any, Final, TypeVar

import orjson
from aiohttp import web

from trigger_engine.errors import RuntimeFailure
from trigger_engine.polling.gc_pause import gc_paused

Record = dict[str, Any]
_T = TypeVar("_T")

KINDS: Final = ("campaigns", "leads", "connections")
LIST_PATHS: Final = tuple(f"/{kind}" for kind in KINDS)
VENDOR_PREFIX: Final = "/api/integrations/zapier"
DEFAULT_PER_PAGE: Final = 100
MAX_CONTROL_ADD: Final = 1_000_000  # items one POST /_control/{kind}?n=N may add
SHUTDOWN_TIMEOUT: Final = 2.0  # seconds a stopping server grants requests still in flight
_START_TIMEOUT: Final = 10.0
_STOP_TIMEOUT: Final = 30.0
_URN_PREFIX: Final = "ACoAA"
_URN_LENGTH: Final = 39


# --------------------------------------------------------------------------- faults


@dataclass
class Fault:
    """An injected failure, served instead of the normal answer."""

    status: int = 500  # HTTP status to return
    count: int = 1  # how many requests it applies to (then it is used up)
    retry_after: str | None = None  # value of a Retry-After header, if any
    body: bytes | None = None  # raw body; None: {"error": ...} (or, with a 2xx, a pure delay)
    content_type: str = "application/json"
    delay: float = 0.0  # seconds to wait before answering
    paths: tuple[str, ...] | None = None  # None: every list endpoint; else e.g. ("/leads",)

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"fault status {self.status} is not an HTTP status (100-599)")
        if self.count < 1:
            raise ValueError(f"fault count must be at least 1, not {self.count}")
        if self.delay < 0:
            raise ValueError(f"fault delay must not be negative, not {self.delay}")
        if self.paths is not None:
            self.paths = tuple(_canonical_path(path) for path in self.paths)

    def applies_to(self, path: str) -> bool:
        return self.paths is None or path in self.paths

    @property
    def is_pure_delay(self) -> bool:
        return self.body is None and 200 <= self.status < 300


def _canonical_path(path: str) -> str:
    canonical = "/" + path.strip("/")
    if canonical not in LIST_PATHS:
        known = ", ".join(LIST_PATHS)
        raise ValueError(f"fault path {path!r} is not a list endpoint (one of {known})")
    return canonical


_FAULT_FIELDS: Final = frozenset(field.name for field in fields(Fault))


def fault_from_json(data: object) -> Fault:
    """Build a Fault from the JSON object posted to ``/_control/fault`` (``body`` a string)."""
    if not isinstance(data, dict):
        raise ValueError("the fault must be a JSON object")
    unknown = sorted(set(data) - _FAULT_FIELDS)
    if unknown:
        raise ValueError(f"unknown fault field(s) {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name in ("status", "count"):
        if name in data:
            value = data[name]
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"fault {name} must be an integer")
            kwargs[name] = value
    if "delay" in data:
        delay = data["delay"]
        if not isinstance(delay, int | float) or isinstance(delay, bool):
            raise ValueError("fault delay must be a number of seconds")
        kwargs["delay"] = float(delay)
    if data.get("retry_after") is not None:
        retry_after = data["retry_after"]
        if not isinstance(retry_after, str | int) or isinstance(retry_after, bool):
            raise ValueError("fault retry_after must be a string or an integer")
        kwargs["retry_after"] = str(retry_after)
    if data.get("body") is not None:
        if not isinstance(data["body"], str):
            raise ValueError("fault body must be a string")
        kwargs["body"] = data["body"].encode()
    if "content_type" in data:
        if not isinstance(data["content_type"], str):
            raise ValueError("fault content_type must be a string")
        kwargs["content_type"] = data["content_type"]
    if data.get("paths") is not None:
        paths = data["paths"]
        if not isinstance(paths, list) or not all(isinstance(path, str) for path in paths):
            raise ValueError('fault paths must be a list of strings such as ["/leads"]')
        kwargs["paths"] = tuple(paths)
    return Fault(**kwargs)


# --------------------------------------------------------------------------- value pools

# (display, ascii) pairs; the ascii form builds handles and e-mail addresses.
_Name = tuple[str, str]


@dataclass(frozen=True)
class _Culture:
    weight: int
    first: tuple[_Name, ...]
    last: tuple[_Name, ...]
    family_first: bool  # CJK order: family name first, no space
    locations: tuple[str, ...]
    companies: tuple[str, ...]


_CULTURES: Final = (
    _Culture(
        weight=10,
        first=(
            ("Zoë", "zoe"),
            ("José", "jose"),
            ("Léa", "lea"),
            ("Søren", "soren"),
            ("Björn", "bjorn"),
            ("François", "francois"),
            ("Małgorzata", "malgorzata"),
            ("Siobhán", "siobhan"),
            ("Ángel", "angel"),
            ("Shaban", "shaban"),
            ("Anshitha", "anshitha"),
            ("Priya", "priya"),
            ("Olumide", "olumide"),
            ("Emily", "emily"),
            ("Noah", "noah"),
            ("Chiara", "chiara"),
            ("Jürgen", "jurgen"),
            ("İlkay", "ilkay"),
            ("Thảo", "thao"),
            ("Mary-Jane", "mary-jane"),
        ),
        last=(
            ("Łukasiewicz", "lukasiewicz"),
            ("Müller", "muller"),
            ("García Márquez", "garcia-marquez"),
            ("Ali", "ali"),
            ("sripadha", "sripadha"),
            ("O'Connor", "oconnor"),
            ("Nakamura", "nakamura"),
            ("Okonkwo", "okonkwo"),
            ("Smith", "smith"),
            ("Dvořák", "dvorak"),
            ("Nguyễn", "nguyen"),
            ("van der Berg", "van-der-berg"),
            ("Øster", "oster"),
            ("Yılmaz", "yilmaz"),
            ("Rossi", "rossi"),
            ("Patel", "patel"),
        ),
        family_first=False,
        locations=(
            "Saudi Arabia",
            "Berlin, Germany",
            "Kraków, Małopolskie, Poland",
            "São Paulo, Brazil",
            "Greater Paris Metropolitan Region",
            "San Francisco Bay Area",
            "Zürich, Switzerland",
            "Bengaluru, Karnataka, India",
            "Lagos, Nigeria",
            "İstanbul, Turkey",
            "Ho Chi Minh City, Vietnam",
            "Dublin, County Dublin, Ireland",
        ),
        companies=(
            "Weblant",
            "Google",
            "Brihaspathi Technologies Pvt.Ltd",
            "Nordlicht GmbH",
            "Café Société SAS",
            "Škoda Auto",
            "Acme Robotics, Inc.",
            "Jumia",
            "Zalando SE",
            "Société Générale",
            "Tata Consultancy Services",
            "Łódź Software House",
        ),
    ),
    _Culture(
        weight=2,
        first=(("Анна", "anna"), ("Ольга", "olga"), ("Мария", "mariya"), ("Ирина", "irina")),
        last=(  # feminine or invariable forms, to agree with the first names
            ("Петрова", "petrova"),
            ("Смирнова", "smirnova"),
            ("Шевченко", "shevchenko"),
            ("Коваленко", "kovalenko"),
        ),
        family_first=False,
        locations=("Moscow, Russia", "Kyiv, Ukraine", "Almaty, Kazakhstan"),
        companies=("Яндекс", "Kaspersky", "EPAM Systems"),
    ),
    _Culture(
        weight=2,
        first=(("雷", "lei"), ("娜", "na"), ("伟", "wei"), ("静", "jing")),
        last=(("李", "li"), ("王", "wang"), ("张", "zhang"), ("陈", "chen")),
        family_first=True,
        locations=("Shanghai, China", "Shenzhen, Guangdong, China", "Taipei City, Taiwan"),
        companies=("腾讯", "Alibaba Group", "字节跳动"),
    ),
    _Culture(
        weight=1,
        first=(("太郎", "taro"), ("花子", "hanako"), ("結衣", "yui")),
        last=(("山田", "yamada"), ("佐藤", "sato"), ("鈴木", "suzuki")),
        family_first=True,
        locations=("Tokyo, Japan", "Osaka, Japan"),
        companies=("楽天グループ株式会社", "Sony", "メルカリ"),
    ),
    _Culture(
        weight=1,
        first=(("민준", "minjun"), ("서연", "seoyeon"), ("지훈", "jihoon")),
        last=(("김", "kim"), ("이", "lee"), ("박", "park")),
        family_first=True,
        locations=("Seoul, South Korea", "Busan, South Korea"),
        companies=("삼성전자", "Kakao", "NAVER"),
    ),
    _Culture(
        weight=1,
        first=(("محمد", "mohammed"), ("فاطمة", "fatima"), ("ليلى", "layla")),
        last=(("العلي", "alali"), ("حداد", "haddad"), ("منصور", "mansour")),
        family_first=False,
        locations=("Dubai, United Arab Emirates", "Riyadh, Saudi Arabia", "Cairo, Egypt"),
        companies=("Careem", "أرامكو السعودية", "Noon"),
    ),
    _Culture(
        weight=1,
        first=(("Γιώργος", "giorgos"), ("Νίκος", "nikos"), ("Δημήτρης", "dimitris")),
        last=(("Παπαδόπουλος", "papadopoulos"), ("Οικονόμου", "oikonomou")),
        family_first=False,
        locations=("Athens, Attiki, Greece", "Thessaloniki, Greece"),
        companies=("Skroutz", "Workable"),
    ),
)


@dataclass(frozen=True, slots=True)
class _Profile:
    person: Record  # every key of a lead's person, in order; per-lead ones are None here
    linkedin: Record  # likewise for person.linkedin_data
    slug: str
    first_name: str


_CULTURE_DRAW: Final = tuple(c for c in _CULTURES for _ in range(c.weight))

_TITLES: Final = (
    "SEO Analyst",
    "Head of Growth",
    "Software Engineer",
    "VP Sales",
    "Chief Technology Officer",
    "Product Manager",
    "Marketing Manager",
    "Technical Recruiter",
    "Founder & CEO",
    "Data Scientist",
    "Account Executive",
    "Customer Success Lead",
    "Ingénieure logicielle",
    "Geschäftsführer",
    "Директор по продажам",
)
_HEADLINE_FORMS: Final = (
    "{title} at {company}",
    "{company}",
    "{title} | {company}",
    '🚀 {title} @ {company} | SaaS, B2B & "growth"',
    "{title} — helping teams sell <better>",
)
_EMPLOYER_SIZES: Final = ("1-10", "11-50", "51-200", "201-500", "501-1000", "1001-5000", "10001+")
_EMAIL_DOMAINS: Final = ("gmail.com", "outlook.com", "example.com", "web.de", "yandex.ru", "qq.com")
_LEAD_STATES: Final = (  # (lead status, last action desc, has a message)
    ("approved", "found", False),
    ("approved", "viewed", False),
    ("pending", "invited", False),
    ("connected", "connected", False),
    ("connected", "messaged", True),
    ("replied", "replied", True),
)
_MESSAGES: Final = (
    "Hi {first}, thanks for connecting! Would you be open to a quick call next week?",
    "Merci {first} ! Ravi de faire votre connaissance.",
    "Sure, send me the deck 👍",
    "Not interested right now, sorry.",
    "Привет! Давайте созвонимся в четверг.",
)
_PROFILE_POOL: Final = 512  # distinct people among leads (each lead has its own id and handle)
_TAGS: Final = ("hot", "vip", "follow-up", "Q3", "event-2025", "café")
_TAG_SETS: Final = ((), (), (), (), ("hot",), ("vip", "Q3"), ("follow-up",), ("event-2025", "café"))
_CAMPAIGN_TYPES: Final = ("linkedin search", "sales navigator", "csv upload", "post engagement")
_CAMPAIGN_NAMES: Final = (
    "Viewing Profiles of 2nd degree {company} Employees",
    "Connect with {title}s in {location}",
    "Q{quarter} outreach: {title}s",
    "Follow-up « {company} » event attendees",
    "Réseau {location}",
)
_TOUCH_TYPES: Final = ("LI View", "LI Connect", "LI Message", "LI Follow", "LI Endorse", "Email")
_DAY_NAMES: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_URL_SAFE: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _sql_time(ts: int) -> str:
    """``2020-04-17 05:51:54+00:00``, the vendor's lead and campaign date format."""
    day, second = divmod(ts, 86400)
    hour, second = divmod(second, 3600)
    minute, second = divmod(second, 60)
    return f"{_sql_date(day)} {hour:02d}:{minute:02d}:{second:02d}+00:00"


@functools.lru_cache(maxsize=64)
def _sql_date(day: int) -> str:
    return datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")


def _http_time(ts: int) -> str:
    """``Mon, 16 Mar 2020 02:46:13 GMT``, the vendor's connection date format."""
    return email.utils.formatdate(ts, usegmt=True)


# --------------------------------------------------------------------------- the simulator


class Simulator:
    """In-memory Meet Alfred data and the aiohttp application that serves it.

    Thread-safe: every read and write of the lists goes through one lock, so a test thread
    may add items while a :class:`SimulatorThread` serves them.
    """

    def __init__(
        self, *, api_key: str = "demo", seed: int = 0, initial: int = 3, auth_param: str = "api_key"
    ) -> None:
        if not api_key:
            raise ValueError("the simulator's api_key must not be empty")
        if not auth_param:
            raise ValueError("the simulator's auth_param must not be empty")
        if initial < 0:
            raise ValueError(f"initial must not be negative, not {initial}")
        self.api_key = api_key
        self.auth_param = auth_param
        self.seed = seed
        self.campaigns: list[Record] = []  # newest first, as served
        self.leads: list[Record] = []
        self.connections: list[Record] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.RLock()
        self._rng = Random(seed)
        self._random = self._rng.random
        self._clock = 1_735_722_000 + self._rng.randrange(0, 180 * 86400)  # from 2025-01-01
        self._next_campaign_key = self._rng.randint(40, 400)
        self._next_action_key = self._rng.randint(4000, 90_000)
        self._team_key = self._rng.randint(10, 999)
        self._user_key = self._rng.randint(10, 999)
        self._ids: set[str] = set()
        self._lead_index: dict[str, Record] = {}
        self._profiles: list[_Profile] = []
        self._faults: list[tuple[Fault, list[int]]] = []  # (fault, [remaining count])
        self._bodies: dict[str, bytes] = {}  # encoded full lists, dropped on change
        self._ticks = 0
        for _ in range(initial):
            self.add_campaign()
        self.add_leads(initial)
        for _ in range(initial):
            self.add_connection()

    # ----------------------------------------------------------------- mutation

    def add_campaign(self) -> Record:
        with self._lock:
            campaign = self._new_campaign(self._advance_clock())
            self.campaigns.insert(0, campaign)
            self._bodies.pop("campaigns", None)
            return campaign

    def add_lead(self) -> Record:
        with self._lock:
            self.add_leads(1)
            return self.leads[0]

    def add_leads(self, n: int) -> None:
        """Add ``n`` leads at once (fast: 100 000 take about a second)."""
        if n < 0:
            raise ValueError(f"cannot add a negative number of leads ({n})")
        if n == 0:
            return
        with self._lock, gc_paused():
            if not self.campaigns:
                self.add_campaign()
            snapshots: dict[int, Record] = {}
            campaigns = self.campaigns
            batch: list[Record] = []
            for _ in range(n):
                source = self._pick(campaigns)
                snapshot = snapshots.get(source["key"])
                if snapshot is None:
                    snapshot = snapshots[source["key"]] = copy.deepcopy(source)
                lead = self._new_lead(self._advance_clock(), snapshot)
                self._lead_index[lead["id"]] = lead
                batch.append(lead)
            batch.reverse()
            self.leads[:0] = batch
            self._bodies.pop("leads", None)

    def add_connection(self) -> Record:
        with self._lock:
            connection = self._new_connection(self._advance_clock())
            self.connections.insert(0, connection)
            self._bodies.pop("connections", None)
            return connection

    def set_lead_field(self, lead_id: str, dotted: str, value: Any) -> None:
        """Set one (possibly nested, dotted) field of a lead, e.g. ``("status", "replied")``.

        Intermediate objects must exist; they are copied first, so that sub-objects shared
        between leads (the campaign snapshot) change for this lead only. The lead keeps its
        place in the list.
        """
        with self._lock:
            lead = self._lead_index.get(lead_id)
            if lead is None:
                raise KeyError(f"no lead with id {lead_id!r}")
            *parents, last = dotted.split(".")
            node = lead
            for depth, name in enumerate(parents):
                child = node.get(name)
                if not isinstance(child, dict):
                    where = ".".join(parents[: depth + 1])
                    raise KeyError(f"lead field {where!r} is not an object")
                child = dict(child)
                node[name] = child
                node = child
            node[last] = value
            if dotted == "id":
                del self._lead_index[lead_id]
                self._lead_index[value] = lead
            self._bodies.pop("leads", None)

    def invalidate(self) -> None:
        """Forget the cached response bodies, after changing the lists by hand."""
        with self._lock:
            self._bodies.clear()
            self._lead_index = {lead["id"]: lead for lead in self.leads}

    def tick(self) -> list[tuple[str, Record]]:
        """One step of "new items over time": a lead every tick, a connection every 2nd
        tick, a campaign every 5th. Returns what was added, as (kind, record) pairs."""
        with self._lock:
            self._ticks += 1
            added: list[tuple[str, Record]] = []
            if self._ticks % 5 == 0:
                added.append(("campaigns", self.add_campaign()))
            added.append(("leads", self.add_lead()))
            if self._ticks % 2 == 0:
                added.append(("connections", self.add_connection()))
            return added

    # ----------------------------------------------------------------- faults

    def inject(self, fault: Fault) -> None:
        """Queue a fault (a copy: the caller's object is not used up)."""
        with self._lock:
            self._faults.append((replace(fault), [fault.count]))

    def pending_faults(self) -> list[Fault]:
        """The faults still queued, each with the count it has left."""
        with self._lock:
            return [replace(fault, count=left[0]) for fault, left in self._faults]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for index, (fault, left) in enumerate(self._faults):
                if fault.applies_to(path):
                    left[0] -= 1
                    if left[0] == 0:
                        del self._faults[index]
                    return fault
            return None

    # ----------------------------------------------------------------- serving

    def app(self) -> web.Application:
        """A new aiohttp application serving this simulator."""
        application = web.Application()
        for kind in KINDS:
            handler = self._list_handler(kind)
            for prefix in ("", VENDOR_PREFIX):
                application.router.add_get(f"{prefix}/{kind}", handler)
                application.router.add_get(f"{prefix}/{kind}/", handler)
        application.router.add_post("/_control/fault", self._control_fault)
        application.router.add_post("/_control/{kind}", self._control_add)
        return application

    def _list_handler(self, kind: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._serve_list(request, kind)

        return handle

    async def _serve_list(self, request: web.Request, kind: str) -> web.StreamResponse:
        params = dict(request.query)
        if self.auth_param in params:
            params[self.auth_param] = "***"
        with self._lock:
            self.requests.append((request.path, params))
        fault = self._take_fault(f"/{kind}")
        if fault is not None:
            if fault.delay > 0:
                await asyncio.sleep(fault.delay)
            if not fault.is_pure_delay:
                return _fault_response(fault)
        supplied = request.query.get(self.auth_param)
        if supplied is None or not secrets.compare_digest(supplied.encode(), self.api_key.encode()):
            return _json_response({"error": "invalid api key"}, status=401)
        if "page" not in request.query:
            return web.Response(body=self._full_body(kind), content_type="application/json")
        try:
            page = _positive_int(request.query, "page", None)
            per_page = _positive_int(request.query, "per_page", DEFAULT_PER_PAGE)
        except ValueError as exc:
            return _json_response({"error": str(exc)}, status=400)
        with self._lock:
            items = self._items(kind)[(page - 1) * per_page : page * per_page]
            body = orjson.dumps(items)
        return web.Response(body=body, content_type="application/json")

    def _full_body(self, kind: str) -> bytes:
        with self._lock:
            body = self._bodies.get(kind)
            if body is None:
                body = self._bodies[kind] = orjson.dumps(self._items(kind))
            return body

    def _items(self, kind: str) -> list[Record]:
        items: list[Record] = getattr(self, kind)
        return items

    async def _control_fault(self, request: web.Request) -> web.Response:
        try:
            fault = fault_from_json(orjson.loads(await request.read()))
        except orjson.JSONDecodeError:
            return _json_response({"error": "the body must be a JSON object"}, status=400)
        except ValueError as exc:
            return _json_response({"error": str(exc)}, status=400)
        self.inject(fault)
        return _json_response({"queued": True, "pending_faults": len(self.pending_faults())})

    async def _control_add(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind not in KINDS:
            return _json_response({"error": f"unknown kind {kind!r}"}, status=404)
        try:
            n = _positive_int(request.query, "n", 1, maximum=MAX_CONTROL_ADD)
        except ValueError as exc:
            return _json_response({"error": str(exc)}, status=400)
        with self._lock:
            if kind == "leads":
                self.add_leads(n)
            else:
                add = self.add_connection if kind == "connections" else self.add_campaign
                for _ in range(n):
                    add()
            total = len(self._items(kind))
        return _json_response({"added": n, "total": total})

    # ----------------------------------------------------------------- record makers

    def _advance_clock(self) -> int:
        self._clock += 20 + self._below(881)
        return self._clock

    def _pick(self, items: Sequence[_T]) -> _T:
        return items[int(self._random() * len(items))]

    def _below(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        return int(self._random() * n)

    def _chance(self, p: float) -> bool:
        return self._random() < p

    def _new_urn(self) -> str:
        rng = self._rng
        while True:
            tail = base64.urlsafe_b64encode(rng.randbytes(26))[: _URN_LENGTH - 5].decode()
            urn = _URN_PREFIX + tail
            if urn not in self._ids:
                self._ids.add(urn)
                return urn

    def _new_person(self) -> tuple[_Culture, _Name, _Name, str]:
        culture = self._pick(_CULTURE_DRAW)
        first = self._pick(culture.first)
        last = self._pick(culture.last)
        name = last[0] + first[0] if culture.family_first else f"{first[0]} {last[0]}"
        return culture, first, last, name

    def _new_campaign(self, now: int) -> Record:
        rng = self._rng
        key = self._next_campaign_key
        self._next_campaign_key += rng.randint(1, 7)
        culture = rng.choice(_CULTURE_DRAW)
        company = rng.choice(culture.companies)
        location = rng.choice(culture.locations)
        title = rng.choice(_TITLES)
        campaign_type = rng.choice(_CAMPAIGN_TYPES)
        name = rng.choice(_CAMPAIGN_NAMES).format(
            company=company, title=title, location=location, quarter=rng.randint(1, 4)
        )
        steps = [
            {
                "delay_number": 0 if index == 0 else rng.randint(1, 5),
                "delay_time_unit": rng.choice(("day(s)", "hour(s)")),
                "tags": rng.sample(_TAGS, rng.randint(0, 1)),
                "type": "LI View" if index == 0 else rng.choice(_TOUCH_TYPES),
            }
            for index in range(rng.randint(1, 4))
        ]
        search_id = rng.randint(1000, 99_999_999)
        search_url = (
            "https://www.linkedin.com/search/results/people/?facetCurrentCompany="
            f"%5B%22{search_id}%22%5D&facetNetwork=%5B%22S%22%5D&origin=FACETED_SEARCH"
        )
        navigator = campaign_type == "sales navigator"
        run_state = rng.choice(("running", "running", "paused"))
        return {
            "auto_approve_leads": rng.random() < 0.7,
            "campaign_type": campaign_type,
            "created_at": _sql_time(now),
            "exclude_invited_profiles": rng.random() < 0.8,
            "exclude_no_photos": rng.random() < 0.2,
            "excluded_profiles": rng.randint(0, 40),
            "get_new_leads": rng.random() < 0.8,
            "key": key,
            "limit_exceeded": rng.choice((None, None, None, False, True)),
            "max_search_amount": rng.choice((100, 500, 1000, 2500)),
            "name": name,
            "next_search_at": _sql_time(now + rng.randint(600, 86400)),
            "next_search_index": rng.randint(0, 25) * 10,
            "num_pending_leads": rng.randint(0, 300),
            "num_touches": len(steps),
            "open_link_only": rng.random() < 0.1,
            "premium_only": rng.random() < 0.1,
            "removed": False,
            "run_state": run_state,
            "sales_navigator_url": (
                f"https://www.linkedin.com/sales/search/people?savedSearchId={search_id}"
                if navigator
                else None
            ),
            "search_ended": run_state == "paused" and rng.random() < 0.5,
            "search_parameters": {
                "connections": {
                    "first": False,
                    "second": rng.random() < 0.7,
                    "third": rng.random() < 0.3,
                },
                "currentCompanies": [company] if rng.random() < 0.5 else [],
                "industries": rng.sample(("Computer Software", "Marketing", "Banking"), 1)
                if rng.random() < 0.3
                else [],
                "keywords": title if rng.random() < 0.5 else "",
                "locations": [location] if rng.random() < 0.6 else [],
                "nonprofitInterests": {"boardService": False, "skilledVounteering": False},
                "pastCompanies": [],
                "profileLanguages": {
                    "english": rng.random() < 0.5,
                    "french": rng.random() < 0.1,
                    "polish": rng.random() < 0.1,
                    "portuguese": rng.random() < 0.1,
                    "russian": rng.random() < 0.1,
                    "spanish": rng.random() < 0.1,
                },
                "schools": [],
                "specifyKeywords": {
                    "company": company if rng.random() < 0.3 else "",
                    "firstName": "",
                    "lastName": "",
                    "school": "",
                    "title": title if rng.random() < 0.3 else "",
                },
            },
            "search_url": search_url,
            "status": "active",
            "team_key": self._team_key,
            "touch_sequence": {"sequence": steps},
            "updated_at": _sql_time(now + rng.randint(0, 3 * 86400)),
            "user_key": self._user_key,
        }

    def _new_profile(self) -> _Profile:
        """A person as leads show them, less what is unique to each lead (id, handle)."""
        chance = self._chance
        culture, first, last, name = self._new_person()
        company = self._pick(culture.companies)
        title = self._pick(_TITLES)
        location = self._pick(culture.locations)
        email_local = f"{first[1]}.{last[1]}"
        named = chance(0.7)
        slug = f"{first[1]}-{last[1]}"
        person: Record = {
            "angellist_handle": slug if chance(0.05) else None,
            "current_employer": company if chance(0.6) else None,
            "current_employer_size": self._pick(_EMPLOYER_SIZES) if chance(0.4) else None,
            "current_title": title,
            "email": f"{email_local}@{self._pick(_EMAIL_DOMAINS)}" if chance(0.3) else None,
            "facebook_handle": email_local if chance(0.05) else None,
            "first_name": first[0] if named else None,
            "github_handle": first[1] + last[1] if chance(0.1) else None,
            "gravatar_handle": None,
            "key": None,  # per lead
            "last_name": last[0] if named else None,
            "linkedin_data": None,  # per lead
            "linkedin_handle": None,  # per lead
            "location": location,
            "name": name,
            "personal_email": f"{email_local}@gmail.com" if chance(0.1) else None,
            "phone": (
                f"+{self._rng.randint(1, 99)} {self._rng.randint(100, 999)} "
                f"{self._rng.randint(1000, 9999)}"
            )
            if chance(0.1)
            else None,
            "twitter_handle": f"@{first[1]}{last[1][:3]}" if chance(0.1) else None,
            "work_email": f"{email_local}@{last[1]}.io" if chance(0.2) else None,
        }
        linkedin: Record = {
            "connectionLevel": self._pick(("1st", "2nd", "2nd", "3rd")),
            "handle": None,  # per lead
            "headline": self._pick(_HEADLINE_FORMS).format(title=title, company=company),
            "location": location,
            "name": name,
            "pic": None,  # per lead
            "sharedConnections": None,  # per lead
            "subHeadline": "",
            "urn": None,  # per lead
        }
        return _Profile(person=person, linkedin=linkedin, slug=slug, first_name=first[0])

    def _new_lead(self, now: int, campaign: Record) -> Record:
        # The bulk path (add_leads(100_000) in about a second): a lead is one of a pool of
        # person profiles plus what is its own, and every draw is one C-level random() call
        # (draw() < p, _pick, _below) rather than Random.choice/randint, five times slower.
        pick, below, draw = self._pick, self._below, self._random
        if len(self._profiles) < _PROFILE_POOL:
            profile = self._new_profile()
            self._profiles.append(profile)
        else:
            profile = pick(self._profiles)
        urn = self._new_urn()
        handle = f"{profile.slug}-{self._rng.getrandbits(32):08x}"
        status, desc, has_message = pick(_LEAD_STATES)
        action_key = self._next_action_key
        self._next_action_key += 1 + below(30)
        shared = below(61)
        replied = status == "replied"
        invited = status in ("pending", "connected", "replied")
        created_at = _sql_time(now)
        return {
            "campaign": campaign,
            "connect_followup": invited and draw() < 0.5,
            "conversation_urn": f"2-{self._rng.getrandbits(96):024x}" if has_message else None,
            "custom_data": {"source": "simulator"} if draw() < 0.1 else {},
            "id": urn,
            "last_action": {
                "campaign_key": campaign["key"],
                "campaign_name": campaign["name"],
                "created_at": created_at,
                "desc": desc,
                "key": action_key,
                "msg": pick(_MESSAGES).format(first=profile.first_name) if has_message else None,
                "msg_created_at": created_at if has_message else None,
            },
            "next_touch_at": None if replied else _sql_time(now + 3600 + below(4 * 86400)),
            "next_touch_index": below(campaign["num_touches"] + 1),
            "person": {
                **profile.person,
                "key": urn,
                "linkedin_data": {
                    **profile.linkedin,
                    "handle": handle,
                    "pic": f"https://daekjd9c602b4.cloudfront.net/{urn}.png",
                    "sharedConnections": (
                        f"{shared} shared connections"
                        if shared > 1
                        else ("1 shared connection" if shared == 1 else "")
                    ),
                    "urn": urn,
                },
                "linkedin_handle": handle,
            },
            "request_connect_at": _sql_time(now - 3600 - below(86400)) if invited else None,
            "return_to_campaign": False,
            "return_to_campaign_date": None,
            "status": status,
            "tags": list(pick(_TAG_SETS)),
            "thread_id": str(self._rng.getrandbits(40)) if has_message else None,
        }

    def _new_connection(self, now: int) -> Record:
        rng = self._rng
        urn = self._new_urn()
        culture, first, last, name = self._new_person()
        public_id = f"{first[1]}-{last[1]}-{rng.getrandbits(36):09x}"
        picture_token = "".join(rng.choices(_URL_SAFE, k=43))
        has_job = rng.random() < 0.4
        return {
            "AIM": None,
            "BLOG_WEBSITE": None,
            "COMPANY_WEBSITE": f"https://{last[1]}.example.com" if rng.random() < 0.1 else None,
            "GTALK": None,
            "ICQ": None,
            "OTHER_WEBSITE": None,
            "PERSONAL_WEBSITE": f"https://{public_id}.dev" if rng.random() < 0.1 else None,
            "PORTFOLIO_WEBSITE": None,
            "QQ": None,
            "RSS_WEBSITE": None,
            "SKYPE": rng.choice(("", "", f"live:{first[1]}{last[1]}")),
            "WECHAT": f"wxid_{rng.getrandbits(40):x}" if culture.family_first else None,
            "YAHOO_MESSENGER": None,
            "address": None,
            "birthday": None,
            "companyName": rng.choice(culture.companies) if has_job else None,
            "connectedAt": _http_time(now),
            "conversation_id": f"2-{rng.getrandbits(96):024x}" if rng.random() < 0.2 else None,
            "degree": 1,
            "email": f"{first[1]}.{last[1]}@{rng.choice(_EMAIL_DOMAINS)}"
            if rng.random() < 0.3
            else "",
            "entityUrn": urn,
            "fieldOfStudy": None,
            "firstName": first[0],
            "headline": rng.choice(_HEADLINE_FORMS).format(
                title=rng.choice(_TITLES), company=rng.choice(culture.companies)
            ),
            "id": urn,
            "industryCode": rng.choice((None, None, 4, 96, 80)),
            "languages": None,
            "lastName": last[0],
            "locationName": rng.choice(culture.locations) if rng.random() < 0.5 else None,
            "name": name,
            "notes": None,
            "objectUrn": str(rng.randint(10_000_000, 999_999_999)),
            "openLink": None,
            "phone": "",
            "picture": (
                "https://media-exp1.licdn.com/dms/image/C5103AQ"
                f"{picture_token[:15]}/profile-displayphoto-shrink_200_200/0"
                f"?e={now + 90 * 86400}&v=beta&t={picture_token}"
            ),
            "postalCode": None,
            "premium": rng.choice((None, None, False, True)),
            "publicIdentifier": public_id,
            "schoolName": None,
            "skills": None,
            "startedMonth": rng.randint(1, 12) if has_job else None,
            "startedYear": rng.randint(2005, 2024) if has_job else None,
            "tags": rng.sample(_TAGS, rng.choice((0, 0, 1))),
            "tenureMonths": None,
            "tenureYears": None,
            "title": rng.choice(_TITLES) if has_job else None,
            "trackingId": None,
            "twitter": "",
            "versionTag": None,
        }


def _json_response(data: object, *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _fault_response(fault: Fault) -> web.Response:
    body = fault.body
    if body is None:
        body = orjson.dumps({"error": f"simulated fault (HTTP {fault.status})"})
    headers = {"Content-Type": fault.content_type}
    if fault.retry_after is not None:
        headers["Retry-After"] = fault.retry_after
    return web.Response(body=body, status=fault.status, headers=headers)


def _positive_int(
    query: Mapping[str, str], name: str, default: int | None, maximum: int | None = None
) -> int:
    raw = query.get(name)
    if raw is None:
        if default is None:
            raise ValueError(f"{name} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, not {raw!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, not {value}")
    return value


# --------------------------------------------------------------------------- running it


async def start(
    sim: Simulator, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Serve ``sim`` on ``host:port`` (0: any free port). Returns the runner (call
    ``await runner.cleanup()`` to stop) and the bound port."""
    runner = web.AppRunner(
        sim.app(),
        access_log=None,  # the access log would print the query string, with the key
        handler_cancellation=True,  # a client that gave up ends its slow answer
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound: int = runner.addresses[0][1]
    except BaseException:
        await runner.cleanup()
        raise
    return runner, bound


async def _tick_every(sim: Simulator, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        sim.tick()


class SimulatorThread:
    """Runs a simulator server on its own event loop in a daemon thread, for sync code::

        with SimulatorThread(Simulator()) as server:
            httpx.get(f"{server.base_url}/leads", params={"api_key": "demo"})

    With ``new_item_interval`` (seconds), :meth:`Simulator.tick` runs that often.
    """

    def __init__(
        self, sim: Simulator, port: int = 0, *, new_item_interval: float | None = None
    ) -> None:
        if new_item_interval is not None and new_item_interval <= 0:
            raise ValueError(f"new_item_interval must be positive, not {new_item_interval}")
        self.sim = sim
        self.port = port
        self.base_url = ""
        self._requested_port = port
        self._interval = new_item_interval
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> SimulatorThread:
        if self._thread is not None:
            raise RuntimeError("this SimulatorThread was already started")
        self._thread = threading.Thread(target=self._run, name="meetalfred-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError(f"the simulator did not start within {_START_TIMEOUT:g} s")
        if self._error is not None:
            self._thread.join(_STOP_TIMEOUT)
            error, self._error = self._error, None
            raise error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if thread.is_alive():
            if loop is not None and stop is not None:
                with contextlib.suppress(RuntimeError):  # the loop already closed
                    loop.call_soon_threadsafe(stop.set)
            thread.join(_STOP_TIMEOUT)
            if thread.is_alive():
                raise RuntimeError(f"the simulator thread did not stop within {_STOP_TIMEOUT:g} s")
        if self._error is not None:  # the server failed while serving
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # handed to the thread that started or stops us
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        runner, port = await start(self.sim, port=self._requested_port)
        ticker: asyncio.Task[None] | None = None
        try:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            if self._interval is not None:
                ticker = asyncio.create_task(_tick_every(self.sim, self._interval))
            self.port = port
            self.base_url = f"http://127.0.0.1:{port}"
            self._ready.set()
            await self._stop.wait()
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            await runner.cleanup()


def serve_forever(
    *,
    port: int,
    api_key: str,
    new_item_interval: float,
    seed: int | None,
    auth_param: str = "api_key",
) -> int:
    """``trigger-engine simulator``: serve on 127.0.0.1 until SIGINT/SIGTERM, then return 0.

    Every ``new_item_interval`` seconds (0 or less: never) :meth:`Simulator.tick` adds a lead,
    every 2nd tick a connection, every 5th a campaign. Without a seed, a random one.
    Raises :class:`~trigger_engine.errors.RuntimeFailure` when the port cannot be bound.
    """
    sim = Simulator(
        api_key=api_key,
        seed=secrets.randbits(32) if seed is None else seed,
        auth_param=auth_param,
    )
    return asyncio.run(_serve(sim, port, new_item_interval))


async def _serve(sim: Simulator, port: int, interval: float) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        try:
            runner, bound = await start(sim, port=port)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise RuntimeFailure(
                f"The simulator cannot listen on 127.0.0.1:{port} ({reason}); "
                "choose another port with --port."
            ) from exc
        ticker = asyncio.create_task(_tick_every(sim, interval)) if interval > 0 else None
        try:
            print(
                f"Meet Alfred simulator on http://127.0.0.1:{bound} "
                f"(api key parameter {sim.auth_param}={sim.api_key})",
                flush=True,
            )
            await stop.wait()
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            await runner.cleanup()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    return 0
