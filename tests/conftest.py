from __future__ import annotations

import http.server
import json
import signal
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import cueapi
import httpx
import pytest

from tests import pg

T = TypeVar("T")

# A test run started in the background of a non-interactive shell (`make check &`) inherits SIGINT
# ignored, and so would every process its tests start, which the tests stop with Ctrl-C: give
# them Python's own handling back (a child starts with the default, Python turns it into
# KeyboardInterrupt).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# A fixed start for manual clocks: a Monday, far from any DST transition.
START = datetime(2026, 6, 1, 12, 0, 0, tzinfo=timezone.utc)


def wait_for(
    probe: Callable[[], T], timeout: float = 10.0, what: str = "condition", every: float = 0.005
) -> T:
    """Polls ``probe`` every ``every`` seconds until it returns something truthy, or fails after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value {value!r}")
        time.sleep(every)


# -- both stores ----------------------------------------------------------------------------------
# A test module that sets STORES = ("sqlite", "postgres") runs each of its tests once per store: the
# autouse fixture ``store`` says which, and ``location(path)`` turns the SQLite file a test names into
# a PostgreSQL database of its own when the store is PostgreSQL (the same one for the same path, so a
# test that reopens its file reopens its database). A test marked ``@pytest.mark.stores(...)`` runs on
# the stores it names instead (several nodes need a database they can share: PostgreSQL only).


def location(db: Path) -> str | Path:
    """Where a test's database lives: the SQLite file ``db``, or the PostgreSQL database standing
    for it."""
    return pg.database_for(db) if pg.current == "postgres" else db


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("stores")
    stores = marker.args if marker is not None else getattr(metafunc.module, "STORES", None)
    if stores and "store" in metafunc.fixturenames:
        metafunc.parametrize("store", stores, indirect=True)


@pytest.fixture(autouse=True)
def store(request: pytest.FixtureRequest) -> Iterator[str]:
    """The store the test runs on: ``sqlite`` unless its module asks for both."""
    kind = str(getattr(request, "param", "sqlite"))
    pg.current = kind
    try:
        yield kind
    finally:
        pg.current = "sqlite"
        if kind == "postgres":
            pg.drop_all()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cueapi.db"


@pytest.fixture
def clock() -> cueapi.ManualClock:
    return cueapi.ManualClock(START)


@pytest.fixture
def app(db: Path, clock: cueapi.ManualClock) -> Iterator[cueapi.App]:
    a = cueapi.App(db, clock=clock, workers=4, grace=0)
    yield a
    a.close()


# -- the HTTP server and webhook receivers ---------------------------------------------------------


_TLS: list[ssl.SSLContext] = []


def _client() -> httpx.Client:
    """A client for one server: the CA bundle is loaded once per test run (``httpx.request`` loads it
    on every call, 40 ms), and like ``httpx.request`` every call gets a connection of its own (no
    keep-alive), so one request's connection handling never decides another's result."""
    if not _TLS:
        _TLS.append(ssl.create_default_context())
    return httpx.Client(timeout=30, verify=_TLS[0], limits=httpx.Limits(max_keepalive_connections=0))


@dataclass
class Server:
    """A live ``cueapi serve`` (in this process) on a free loopback port, with one user."""

    app: cueapi.App
    url: str
    key: str
    secret: str
    db: Path
    http: httpx.Client = field(default_factory=_client, repr=False)

    def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        key: str | bool | None = True,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """One request; ``key=True`` uses this server's user, ``None``/``False`` sends no key."""
        h = dict(headers or {})
        token = self.key if key is True else key
        if token:
            h["Authorization"] = f"Bearer {token}"
        return self.http.request(
            method, self.url + path, json=json, headers=h, content=content, params=params
        )

    def register(self, email: str) -> tuple[str, str]:
        """Creates another user; returns (api key, webhook secret)."""
        r = self.call("POST", "/v1/auth/register", {"email": email}, key=None)
        assert r.status_code == 201, r.text
        body = r.json()
        return body["api_key"], body["webhook_secret"]

    def cue(self, **fields: Any) -> dict[str, Any]:
        """Creates a cue (201 expected) and returns it."""
        r = self.call("POST", "/v1/cues", fields)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def execution(self, execution_id: str) -> dict[str, Any]:
        r = self.call("GET", f"/v1/executions/{execution_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())


# Test servers limit requests so generously that none is ever refused (a manual clock that does not
# move never refills an allowance), yet every request goes through the limiter. Rate-limit tests
# pass their own limit.
NO_THROTTLE = 1_000_000


def start_server(
    db: Path,
    clock: cueapi.ManualClock | None = None,
    *,
    rate_limit_per_minute: int = NO_THROTTLE,
    **settings: Any,
) -> Server:
    """A server on ``db`` (private targets allowed) with one registered user; ``settings`` go to
    ``App.serve`` (``worker_lease_seconds``, ``realert_seconds``, ...)."""
    app = cueapi.App(location(db), clock=clock, workers=2)
    url = app.serve(
        "127.0.0.1", 0, allow_private_targets=True, rate_limit_per_minute=rate_limit_per_minute, **settings
    )
    r = httpx.post(url + "/v1/auth/register", json={"email": "owner@example.com"}, timeout=30)
    assert r.status_code == 201, r.text
    return Server(app, url, r.json()["api_key"], r.json()["webhook_secret"], db)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = start_server(tmp_path / "server.db")
    yield s
    s.app.close()


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


# What a receiver answers: status, headers, body, and seconds to wait before answering.
Answer = tuple[int, dict[str, str], bytes, float]


class Receiver:
    """A real webhook receiver on a free loopback port. It records every request and answers
    with ``answer(request)``: by default 200 and ``{"status": "received"}``."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.cond = threading.Condition()
        self.answer: Callable[[Received], Answer] = lambda _r: (
            200,
            {"Content-Type": "application/json"},
            b'{"status": "received"}',
            0.0,
        )
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                req = Received(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(n),
                    time.time(),
                )
                status, headers, body, delay = receiver.answer(req)
                with receiver.cond:
                    receiver.requests.append(req)
                    receiver.cond.notify_all()
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_port}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, n: int, timeout: float = 15.0) -> list[Received]:
        """Waits until at least ``n`` requests arrived; returns them all."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver got {len(self.requests)} request(s), expected {n}")
                self.cond.wait(left)
            return list(self.requests)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def beacon() -> Iterator[Receiver]:
    """A second receiver, apart from the one under test (e.g. of ``advance`` beacons)."""
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def now_clock() -> cueapi.ManualClock:
    """A manual clock at the real current time (whole seconds): signatures carry the engine
    clock's timestamp and verifiers check it against real time."""
    return cueapi.ManualClock(datetime.now(timezone.utc).replace(microsecond=0))


@pytest.fixture
def timed(tmp_path: Path, now_clock: cueapi.ManualClock) -> Iterator[Server]:
    """A server whose engine runs on ``now_clock``."""
    s = start_server(tmp_path / "timed.db", now_clock)
    yield s
    s.app.close()


@pytest.fixture
def other(server: Server) -> str:
    """The API key of a second user of the ``server``."""
    key, _secret = server.register("other@example.com")
    return key
