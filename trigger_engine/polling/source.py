"""The Meet Alfred API client: one GET per poll, the API key as a query parameter.

Every URL here carries the API key until it is redacted, so no URL leaves this module
unredacted: messages name ``GET {base_url}{path}?api_key=***``, the base URL's userinfo (a
password) shown as ``***@`` (:func:`trigger_engine.core.redact.redact_url`), and an httpx
error text is scrubbed of both before it becomes a message. Failures are classified
by one table (``classify_status``) into what the caller does next (``FailureKind``).

``source.timeout`` bounds each request as a whole, by the wall clock: connect, sending,
the response headers, any number of interim ``1xx`` responses, and the body
(``polling/deadline.py``: every socket read and write keeps the request's deadline). A body
is bounded in size and in decompression ratio while it streams in, and in parse cost
before it is parsed (``polling/body.py``), and parsed with every value exact
(``core/exact_json.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

import httpx

from trigger_engine import __version__
from trigger_engine.clock import now
from trigger_engine.config import Account, SourceSettings, TriggerSettings
from trigger_engine.core.exact_json import parse_json, scan_json
from trigger_engine.core.keys import lookup
from trigger_engine.core.redact import REDACTED, redact_url, scrub_url
from trigger_engine.core.retry import parse_retry_after
from trigger_engine.errors import SourceError
from trigger_engine.ops.logs import get_logger
from trigger_engine.polling.body import (
    ACCEPT_ENCODING,
    BodyLimits,
    BodyRefused,
    check_parse_cost,
    read_body,
)
from trigger_engine.polling.deadline import deadline
from trigger_engine.polling.transport import DeadlineTransport
from trigger_engine.states import FailureKind

log = get_logger("trigger_engine.polling.source")

MAX_BODY = 512 * 1024 * 1024  # refuse to buffer more than this from one response


def classify_status(status: int) -> FailureKind | None:
    """None for success; otherwise what kind of failure an HTTP status is."""
    if 200 <= status < 300:
        return None
    if status in (401, 403):
        return FailureKind.AUTH
    if status in (408, 425, 429) or status >= 500:
        return FailureKind.TRANSIENT
    return FailureKind.CLIENT


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with each of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


class Source:
    """The Meet Alfred API client of one process (a pooled httpx.Client)."""

    def __init__(
        self,
        settings: SourceSettings,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._client = httpx.Client(
            timeout=httpx.Timeout(settings.timeout),
            follow_redirects=False,
            headers={
                "user-agent": f"trigger-engine/{__version__}",
                "accept": "application/json",
                "accept-encoding": ACCEPT_ENCODING,
            },
            transport=transport if transport is not None else DeadlineTransport(),
        )

    def close(self) -> None:
        """Close the HTTP client and its connections."""
        self._client.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def display_url(self, trigger: TriggerSettings, page: Mapping[str, str] | None = None) -> str:
        """The request URL as we show it: the key parameter and the userinfo redacted."""
        params = {self.settings.auth_param: REDACTED, **trigger.params, **(page or {})}
        base = redact_url(self.settings.base_url)
        return f"{base}{trigger.path}?{urlencode(params, safe='*')}"

    def fetch(
        self,
        account: Account,
        trigger: TriggerSettings,
        *,
        keep_going: Callable[[list[Any]], bool] | None = None,
    ) -> list[Any]:
        """The trigger's items, as the API returned them, all pages together. Raises
        ``SourceError``; a failure on any page fails the whole fetch.

        With pagination, pages are followed until a short or empty page, a page that
        repeats the previous one, ``keep_going(page)`` says no (the poller: nothing
        unseen on it), or ``max_pages`` (a hard stop: a poll can never loop forever)."""
        pages = trigger.pagination
        if pages is None:
            return self._get(account, trigger, {})
        items: list[Any] = []
        previous: list[Any] | None = None
        for number in range(pages.first_page, pages.first_page + pages.max_pages):
            query = {pages.page_param: str(number), pages.per_page_param: str(pages.per_page)}
            page = self._get(account, trigger, query)
            if page == previous:
                log.warning(
                    "poll.page_repeated", account=account.name, trigger=trigger.name, page=number
                )
                return items
            items.extend(page)
            if len(page) < pages.per_page or (keep_going is not None and not keep_going(page)):
                return items
            previous = page
        log.warning(
            "poll.page_cap_reached",
            account=account.name,
            trigger=trigger.name,
            max_pages=pages.max_pages,
        )
        return items

    def _get(
        self, account: Account, trigger: TriggerSettings, page: Mapping[str, str]
    ) -> list[Any]:
        key = account.api_key.get_secret_value()
        where = (
            f"account '{account.name}', trigger '{trigger.name}': "
            f"GET {self.display_url(trigger, page)}"
        )
        params = {**trigger.params, **page, self.settings.auth_param: key}
        ends_at = time.monotonic() + self.settings.timeout
        try:
            with (
                deadline(self.settings.timeout),
                self._client.stream(
                    "GET", self.settings.base_url + trigger.path, params=params
                ) as response,
            ):
                status = response.status_code
                kind = classify_status(status)
                if kind is not None:
                    raise self._status_error(kind, status, response.headers, where, account)
                raw, encoding = _raw_body(response)
                body = read_body(_until(raw, ends_at), encoding, BodyLimits(max_size=MAX_BODY))
                content_type = response.headers.get("content-type", "")
        except httpx.TimeoutException:
            raise SourceError(
                FailureKind.TRANSIENT, f"{where}: timed out after {self.settings.timeout:g}s"
            ) from None
        except BodyRefused as exc:
            raise SourceError(FailureKind.BAD_BODY, f"{where}: {exc}") from None
        except httpx.DecodingError:  # decoded by httpx: a response a test double read
            raise SourceError(
                FailureKind.BAD_BODY, f"{where}: the response body could not be decoded"
            ) from None
        except httpx.TransportError as exc:
            reason = scrub_url(
                redact(str(exc) or type(exc).__name__, [key]), self.settings.base_url
            )
            raise SourceError(
                FailureKind.TRANSIENT, f"{where}: connection failed ({reason})"
            ) from None
        return parse_items(body, content_type, trigger.items_path, where)

    def _status_error(
        self,
        kind: FailureKind,
        status: int,
        headers: Mapping[str, str],
        where: str,
        account: Account,
    ) -> SourceError:
        phrase = httpx.codes.get_reason_phrase(status)
        if kind is FailureKind.AUTH:
            message = (
                f"{where}: the API key of account '{account.name}' was refused "
                f"(HTTP {status} {phrase}); check accounts.api_key"
            )
        elif 300 <= status < 400:
            message = (
                f"{where}: HTTP {status} {phrase} (a redirect); set source.base_url "
                "to the address it redirects to"
            )
        else:
            message = f"{where}: HTTP {status} {phrase}"
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(headers.get("retry-after"), now())
        return SourceError(kind, message, retry_after=retry_after)


def _raw_body(response: httpx.Response) -> tuple[Iterator[bytes], str]:
    """The body as received and its content coding, for ``read_body`` to decode. A
    response made of bytes (``httpx.MockTransport``'s) was read and decoded by httpx
    already: its content is the body, in no coding."""
    if response.is_stream_consumed:
        return iter([response.content]), ""
    return response.iter_raw(), response.headers.get("content-encoding", "")


def _until(chunks: Iterator[bytes], ends_at: float) -> Iterator[bytes]:
    """``chunks`` while the clock is before ``ends_at`` (a transport without deadline)."""
    for chunk in chunks:
        if time.monotonic() > ends_at:
            raise httpx.ReadTimeout("total time exceeded")
        yield chunk


def parse_items(body: bytes, content_type: str, items_path: str | None, where: str) -> list[Any]:
    """The list of items in a response body, or a BAD_BODY ``SourceError`` saying why not.

    The parse is refused unstarted when it would cost too much (``body.check_parse_cost``),
    and keeps every value exact (``core.exact_json.parse_json``): one scan of the body
    serves both."""
    scan = scan_json(body)
    try:
        check_parse_cost(scan.structural)
    except BodyRefused as exc:
        raise SourceError(FailureKind.BAD_BODY, f"{where}: {exc}") from None
    try:
        data = parse_json(body, scan)
    except ValueError:
        shown = content_type.split(";")[0] or "no content-type"
        what = "is empty" if not body.strip() else f"is not valid JSON ({shown})"
        raise SourceError(FailureKind.BAD_BODY, f"{where}: the response {what}") from None
    if items_path:
        if not isinstance(data, dict):
            raise SourceError(
                FailureKind.BAD_BODY,
                f"{where}: expected an object holding '{items_path}', got {_kind(data)}",
            )
        data = lookup(data, items_path)
        if not isinstance(data, list):
            raise SourceError(
                FailureKind.BAD_BODY,
                f"{where}: '{items_path}' is missing from the response or is not a list",
            )
    elif not isinstance(data, list):
        hint = " (set items_path to the list inside it)" if isinstance(data, dict) else ""
        raise SourceError(
            FailureKind.BAD_BODY, f"{where}: expected a JSON list, got {_kind(data)}{hint}"
        )
    return data


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"
