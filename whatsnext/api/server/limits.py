"""Limits per client address, kept in memory by each server process.

Failed authentications: an address that presented ``--auth-failures-per-minute`` bad tokens (at the
API, or at the dashboard's sign-in form) within the last minute is answered 429 with ``Retry-After``
for every further token until the oldest of them is a minute old. While it is limited, a token
is not even looked up unless it authenticated from that address before (in this process): guessing
goes on no faster by ignoring the 429s, and the clients that were working from that address (a
worker, a colleague behind the same NAT) keep working.

Streams: a route that holds a request open (the dashboard's live updates, a log follow) opts in with
:func:`stream_slot`; one address holds at most ``--max-streams-per-client`` of them and the server
``--max-streams``; past either, 429 with ``Retry-After``. Routes that do not opt in are not counted.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from aiohttp import web

from .browser import client_address
from .config import Settings
from .errors import ApiError

WINDOW_SECONDS = 60.0
"""The window failed authentications are counted over."""
MAX_ADDRESSES = 10_000
"""Addresses whose failures are remembered at most (the one that failed least recently goes first)."""
STREAM_RETRY_AFTER = 2
"""Seconds a client is asked to wait when it holds (or the server holds) too many streams."""
TOO_MANY = "too_many_requests"


def too_many(message: str, retry_after: int, field: str) -> ApiError:
    """429 with ``Retry-After``: the same request may succeed after that many seconds."""
    retry_after = max(1, retry_after)
    return ApiError(
        429,
        TOO_MANY,
        message,
        {"field": field, "retry_after": retry_after},
        {"Retry-After": str(retry_after)},
    )


class AuthFailures:
    """Failed authentications per client address over a sliding window (at most ``limit`` times
    remembered per address, at most ``max_addresses`` addresses)."""

    def __init__(
        self,
        limit: int,
        window: float = WINDOW_SECONDS,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._proven: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        """(address, token hash) pairs that authenticated: a limited address may still use them."""

    def __len__(self) -> int:
        return len(self._failures)

    def proven(self, address: str, digest: bytes) -> None:
        """``digest`` authenticated from ``address`` (remembered for at most ``max_addresses`` pairs)."""
        if self.limit <= 0:
            return
        key = (address, digest)
        if key in self._proven:
            return
        if len(self._proven) >= self.max_addresses:
            self._proven.popitem(last=False)
        self._proven[key] = None

    def check(self, address: str, digest: bytes) -> None:
        """Before a token is looked up: 429 when ``address`` is limited and the token never
        authenticated from it."""
        if self.limit <= 0 or address not in self._failures or (address, digest) in self._proven:
            return
        times = self._failures[address]
        now = self.clock()
        while times and now - times[0] >= self.window:
            times.popleft()
        if len(times) >= self.limit:
            self._refuse(math.ceil(times[0] + self.window - now))

    def _refuse(self, wait: int) -> None:
        raise too_many(
            f"too many failed authentications from this address ({self.limit} a minute, "
            f"--auth-failures-per-minute): try again in {max(1, wait)} s",
            wait,
            "Authorization",
        )

    def failed(self, address: str) -> None:
        """Count one failed authentication of ``address``; raise 429 instead when it already had
        ``limit`` within the window (that one is not counted: the window is not pushed on)."""
        if self.limit <= 0:
            return
        now = self.clock()
        times = self._failures.get(address)
        if times is None:
            if len(self._failures) >= self.max_addresses:
                self._failures.popitem(last=False)
            times = self._failures[address] = deque(maxlen=self.limit)
        else:
            self._failures.move_to_end(address)
        while times and now - times[0] >= self.window:
            times.popleft()
        if len(times) >= self.limit:
            self._refuse(math.ceil(times[0] + self.window - now))
        times.append(now)


class StreamSlots:
    """Open streams, per client address and in all; a route opts in with :meth:`slot`."""

    def __init__(self, per_client: int, total: int) -> None:
        self.per_client = per_client
        self.total = total
        self.open = 0
        self.by_client: dict[str, int] = {}

    @contextmanager
    def slot(self, address: str) -> Iterator[None]:
        """Hold one stream of ``address`` while the block runs; 429 when a cap is reached."""
        held = self.by_client.get(address, 0)
        if held >= self.per_client:
            raise too_many(
                f"this address holds {held} open streams, the most one client may "
                "(--max-streams-per-client): close one or retry later",
                STREAM_RETRY_AFTER,
                "streams",
            )
        if self.open >= self.total:
            raise too_many(
                f"this server holds {self.open} open streams, the most it serves (--max-streams): "
                "retry later",
                STREAM_RETRY_AFTER,
                "streams",
            )
        self.open += 1
        self.by_client[address] = held + 1
        try:
            yield
        finally:
            self.open -= 1
            left = self.by_client[address] - 1
            if left:
                self.by_client[address] = left
            else:
                del self.by_client[address]


auth_failures_key = web.AppKey("auth_failures", AuthFailures)
stream_slots_key = web.AppKey("stream_slots", StreamSlots)


def install_limits(app: web.Application, settings: Settings) -> None:
    """The application's counters, sized by its settings."""
    app[auth_failures_key] = AuthFailures(settings.auth_failures_per_minute)
    app[stream_slots_key] = StreamSlots(settings.max_streams_per_client, settings.max_streams)


def auth_check(request: web.Request, digest: bytes) -> None:
    """Before a token is looked up: 429 when the request's address is limited and the token never
    authenticated from it."""
    failures = request.app.get(auth_failures_key)
    if failures is not None and failures.limit > 0:
        failures.check(client_address(request), digest)


def auth_succeeded(request: web.Request, digest: bytes) -> None:
    """The token authenticated: its address may keep using it while limited."""
    failures = request.app.get(auth_failures_key)
    if failures is not None and failures.limit > 0:
        failures.proven(client_address(request), digest)


def auth_failed(request: web.Request) -> None:
    """A request's token failed to authenticate: count it, or raise 429 if its address is over the
    limit. Call it just before answering 401."""
    failures = request.app.get(auth_failures_key)
    if failures is not None:
        failures.failed(client_address(request))


def stream_slot(request: web.Request) -> AbstractContextManager[None]:
    """What a streaming route holds while it streams (429 past ``--max-streams-per-client`` or
    ``--max-streams``)."""
    return request.app[stream_slots_key].slot(client_address(request))
