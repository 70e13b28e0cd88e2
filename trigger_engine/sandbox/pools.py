"""The value pools simulated records are drawn from: names by culture, titles, messages, tags.

Plain data, no logic: :mod:`trigger_engine.sandbox.records` draws from it. Names and places are
deliberately varied (accents, CJK, Cyrillic, Arabic, emoji in headlines) so that the engine's
handling of Unicode is exercised by every demo and test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# (display, ascii) pairs; the ascii form builds handles and e-mail addresses.
Name = tuple[str, str]


@dataclass(frozen=True)
class Culture:
    """Names, places and employers that belong together, drawn ``weight`` times as often."""

    weight: int
    first: tuple[Name, ...]
    last: tuple[Name, ...]
    family_first: bool  # CJK order: family name first, no space
    locations: tuple[str, ...]
    companies: tuple[str, ...]


CULTURES: Final = (
    Culture(
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
    Culture(
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
    Culture(
        weight=2,
        first=(("雷", "lei"), ("娜", "na"), ("伟", "wei"), ("静", "jing")),
        last=(("李", "li"), ("王", "wang"), ("张", "zhang"), ("陈", "chen")),
        family_first=True,
        locations=("Shanghai, China", "Shenzhen, Guangdong, China", "Taipei City, Taiwan"),
        companies=("腾讯", "Alibaba Group", "字节跳动"),
    ),
    Culture(
        weight=1,
        first=(("太郎", "taro"), ("花子", "hanako"), ("結衣", "yui")),
        last=(("山田", "yamada"), ("佐藤", "sato"), ("鈴木", "suzuki")),
        family_first=True,
        locations=("Tokyo, Japan", "Osaka, Japan"),
        companies=("楽天グループ株式会社", "Sony", "メルカリ"),
    ),
    Culture(
        weight=1,
        first=(("민준", "minjun"), ("서연", "seoyeon"), ("지훈", "jihoon")),
        last=(("김", "kim"), ("이", "lee"), ("박", "park")),
        family_first=True,
        locations=("Seoul, South Korea", "Busan, South Korea"),
        companies=("삼성전자", "Kakao", "NAVER"),
    ),
    Culture(
        weight=1,
        first=(("محمد", "mohammed"), ("فاطمة", "fatima"), ("ليلى", "layla")),
        last=(("العلي", "alali"), ("حداد", "haddad"), ("منصور", "mansour")),
        family_first=False,
        locations=("Dubai, United Arab Emirates", "Riyadh, Saudi Arabia", "Cairo, Egypt"),
        companies=("Careem", "أرامكو السعودية", "Noon"),
    ),
    Culture(
        weight=1,
        first=(("Γιώργος", "giorgos"), ("Νίκος", "nikos"), ("Δημήτρης", "dimitris")),
        last=(("Παπαδόπουλος", "papadopoulos"), ("Οικονόμου", "oikonomou")),
        family_first=False,
        locations=("Athens, Attiki, Greece", "Thessaloniki, Greece"),
        companies=("Skroutz", "Workable"),
    ),
)

# One entry per unit of weight: a uniform pick from it is a weighted pick of a culture.
CULTURE_DRAW: Final = tuple(c for c in CULTURES for _ in range(c.weight))

TITLES: Final = (
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
HEADLINE_FORMS: Final = (
    "{title} at {company}",
    "{company}",
    "{title} | {company}",
    '🚀 {title} @ {company} | SaaS, B2B & "growth"',
    "{title} — helping teams sell <better>",
)
EMPLOYER_SIZES: Final = ("1-10", "11-50", "51-200", "201-500", "501-1000", "1001-5000", "10001+")
EMAIL_DOMAINS: Final = ("gmail.com", "outlook.com", "example.com", "web.de", "yandex.ru", "qq.com")
LEAD_STATES: Final = (  # (lead status, last action desc, has a message)
    ("approved", "found", False),
    ("approved", "viewed", False),
    ("pending", "invited", False),
    ("connected", "connected", False),
    ("connected", "messaged", True),
    ("replied", "replied", True),
)
MESSAGES: Final = (
    "Hi {first}, thanks for connecting! Would you be open to a quick call next week?",
    "Merci {first} ! Ravi de faire votre connaissance.",
    "Sure, send me the deck 👍",
    "Not interested right now, sorry.",
    "Привет! Давайте созвонимся в четверг.",
)
TAGS: Final = ("hot", "vip", "follow-up", "Q3", "event-2025", "café")
TAG_SETS: Final = ((), (), (), (), ("hot",), ("vip", "Q3"), ("follow-up",), ("event-2025", "café"))
CAMPAIGN_TYPES: Final = ("linkedin search", "sales navigator", "csv upload", "post engagement")
CAMPAIGN_NAMES: Final = (
    "Viewing Profiles of 2nd degree {company} Employees",
    "Connect with {title} profiles in {location}",
    "Q{quarter} outreach: {title} leads",
    "Follow-up « {company} » event attendees",
    "Réseau {location}",
)
TOUCH_TYPES: Final = ("LI View", "LI Connect", "LI Message", "LI Follow", "LI Endorse", "Email")
URL_SAFE: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
