"""Deterministic record generation: campaigns, leads and connections shaped like the vendor's.

Every value comes from one ``random.Random(seed)`` and a simulated clock, never the wall clock,
so a seed always gives the same records in the same order. Identifiers are unique within one
:class:`RecordMaker`: 39-character LinkedIn-URN-like ids for leads and connections, increasing
integer keys for campaigns.
"""

from __future__ import annotations

import base64
import email.utils
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from random import Random
from typing import Any, Final, TypeVar

from trigger_engine.sandbox.pools import (
    CAMPAIGN_NAMES,
    CAMPAIGN_TYPES,
    CULTURE_DRAW,
    EMAIL_DOMAINS,
    EMPLOYER_SIZES,
    HEADLINE_FORMS,
    LEAD_STATES,
    MESSAGES,
    TAG_SETS,
    TAGS,
    TITLES,
    TOUCH_TYPES,
    URL_SAFE,
    Culture,
    Name,
)

Record = dict[str, Any]
_T = TypeVar("_T")

KINDS: Final = ("campaigns", "leads", "connections")  # the three lists the API serves
_PROFILE_POOL: Final = 512  # distinct people among leads (each lead has its own id and handle)
_URN_PREFIX: Final = "ACoAA"
_URN_LENGTH: Final = 39


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


@dataclass(frozen=True, slots=True)
class _Profile:
    """A person as leads show them, shared by many leads; what is each lead's own is None."""

    person: Record  # every key of a lead's person, in order; per-lead ones are None here
    linkedin: Record  # likewise for person.linkedin_data
    slug: str
    first_name: str


class RecordMaker:
    """Makes campaigns, leads and connections from one seed: same seed, same records.

    Each new record is stamped a little later (20 s to 15 min) on the simulated clock than the
    one before. Not thread-safe: :class:`~trigger_engine.sandbox.simulator.Simulator` calls it
    under its lock.
    """

    def __init__(self, seed: int) -> None:
        self._rng = Random(seed)
        self._random = self._rng.random
        self._clock = 1_735_722_000 + self._rng.randrange(0, 180 * 86400)  # from 2025-01-01
        self._next_campaign_key = self._rng.randint(40, 400)
        self._next_action_key = self._rng.randint(4000, 90_000)
        self._team_key = self._rng.randint(10, 999)
        self._user_key = self._rng.randint(10, 999)
        self._ids: set[str] = set()
        self._profiles: list[_Profile] = []

    def campaign(self) -> Record:
        """A new campaign."""
        return self._new_campaign(self._advance_clock())

    def lead(self, campaign: Record) -> Record:
        """A new lead in ``campaign``, which it holds by reference: pass a snapshot, not a
        campaign that will change later."""
        return self._new_lead(self._advance_clock(), campaign)

    def connection(self) -> Record:
        """A new LinkedIn connection."""
        return self._new_connection(self._advance_clock())

    def pick(self, items: Sequence[_T]) -> _T:
        """One of ``items``, uniformly (one ``random()`` call: faster than ``Random.choice``)."""
        return items[int(self._random() * len(items))]

    def _advance_clock(self) -> int:
        self._clock += 20 + self._below(881)
        return self._clock

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

    def _new_person(self) -> tuple[Culture, Name, Name, str]:
        culture = self.pick(CULTURE_DRAW)
        first = self.pick(culture.first)
        last = self.pick(culture.last)
        name = last[0] + first[0] if culture.family_first else f"{first[0]} {last[0]}"
        return culture, first, last, name

    def _new_campaign(self, now: int) -> Record:
        rng = self._rng
        key = self._next_campaign_key
        self._next_campaign_key += rng.randint(1, 7)
        culture = rng.choice(CULTURE_DRAW)
        company = rng.choice(culture.companies)
        location = rng.choice(culture.locations)
        title = rng.choice(TITLES)
        campaign_type = rng.choice(CAMPAIGN_TYPES)
        name = rng.choice(CAMPAIGN_NAMES).format(
            company=company, title=title, location=location, quarter=rng.randint(1, 4)
        )
        steps = [
            {
                "delay_number": 0 if index == 0 else rng.randint(1, 5),
                "delay_time_unit": rng.choice(("day(s)", "hour(s)")),
                "tags": rng.sample(TAGS, rng.randint(0, 1)),
                "type": "LI View" if index == 0 else rng.choice(TOUCH_TYPES),
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
        company = self.pick(culture.companies)
        title = self.pick(TITLES)
        location = self.pick(culture.locations)
        email_local = f"{first[1]}.{last[1]}"
        named = chance(0.7)
        slug = f"{first[1]}-{last[1]}"
        person: Record = {
            "angellist_handle": slug if chance(0.05) else None,
            "current_employer": company if chance(0.6) else None,
            "current_employer_size": self.pick(EMPLOYER_SIZES) if chance(0.4) else None,
            "current_title": title,
            "email": f"{email_local}@{self.pick(EMAIL_DOMAINS)}" if chance(0.3) else None,
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
            "connectionLevel": self.pick(("1st", "2nd", "2nd", "3rd")),
            "handle": None,  # per lead
            "headline": self.pick(HEADLINE_FORMS).format(title=title, company=company),
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
        pick, below, draw = self.pick, self._below, self._random
        if len(self._profiles) < _PROFILE_POOL:
            profile = self._new_profile()
            self._profiles.append(profile)
        else:
            profile = pick(self._profiles)
        urn = self._new_urn()
        handle = f"{profile.slug}-{self._rng.getrandbits(32):08x}"
        status, desc, has_message = pick(LEAD_STATES)
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
                "msg": pick(MESSAGES).format(first=profile.first_name) if has_message else None,
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
            "tags": list(pick(TAG_SETS)),
            "thread_id": str(self._rng.getrandbits(40)) if has_message else None,
        }

    def _new_connection(self, now: int) -> Record:
        rng = self._rng
        urn = self._new_urn()
        culture, first, last, name = self._new_person()
        public_id = f"{first[1]}-{last[1]}-{rng.getrandbits(36):09x}"
        picture_token = "".join(rng.choices(URL_SAFE, k=43))
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
            "email": f"{first[1]}.{last[1]}@{rng.choice(EMAIL_DOMAINS)}"
            if rng.random() < 0.3
            else "",
            "entityUrn": urn,
            "fieldOfStudy": None,
            "firstName": first[0],
            "headline": rng.choice(HEADLINE_FORMS).format(
                title=rng.choice(TITLES), company=rng.choice(culture.companies)
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
            "tags": rng.sample(TAGS, rng.choice((0, 0, 1))),
            "tenureMonths": None,
            "tenureYears": None,
            "title": rng.choice(TITLES) if has_job else None,
            "trackingId": None,
            "twitter": "",
            "versionTag": None,
        }
