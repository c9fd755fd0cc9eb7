"""The SSRF table: every spelling of an address cueapi must not call — IPv4 in dotted, short,
decimal, octal and hex forms; IPv6 loopback, unspecified, mapped (``::ffff:0:0/96`` included),
IPv4-compatible, NAT64 (``64:ff9b::/96`` and ``64:ff9b:1::/48``), 6to4, link-local, unique local,
site-local, multicast, documentation and discard; names that resolve to loopback; URLs with
credentials — is refused as a callback, an ``on_failure`` webhook and an alert webhook when stored,
and again, where the connection would go, when delivered (a name that resolved elsewhere at
creation is checked at delivery: the rebinding window)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cueapi
import httpx
import pytest

from tests.conftest import Receiver, Server, start_server, wait_for

FAR = {"type": "once", "at": "2099-01-01T00:00:00Z"}

# (host as written in the URL, why) — every one refused by a server as deployed.
REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.1", "loopback, short form"),
    ("127.000.000.001", "loopback, zero-padded"),
    ("2130706433", "loopback, decimal"),
    ("0x7f000001", "loopback, hex"),
    ("0x7f.0.0.1", "loopback, hex octet"),
    ("0177.0.0.1", "loopback, octal octet"),
    ("017700000001", "loopback, octal"),
    ("0", "this network, one number"),
    ("0.0.0.0", "this network"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("192.168.0.1", "private"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("169.254.169.254", "cloud metadata"),
    ("0xa9fea9fe", "cloud metadata, hex"),
    ("224.0.0.1", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("192.0.2.1", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("240.0.0.1", "reserved"),
    ("[::1]", "IPv6 loopback"),
    ("[0:0:0:0:0:0:0:1]", "IPv6 loopback, long form"),
    ("[::]", "IPv6 unspecified"),
    ("[::ffff:127.0.0.1]", "IPv4-mapped loopback"),
    ("[::ffff:7f00:1]", "IPv4-mapped loopback, hex"),
    ("[::ffff:169.254.169.254]", "IPv4-mapped metadata"),
    ("[::127.0.0.1]", "IPv4-compatible loopback"),
    ("[64:ff9b::127.0.0.1]", "NAT64 of loopback"),
    ("[64:ff9b::a00:1]", "NAT64 of a private address"),
    ("[64:ff9b:1::a00:1]", "local-use NAT64"),
    ("[2002:7f00:1::]", "6to4 of loopback"),
    ("[fe80::1]", "IPv6 link-local"),
    ("[fc00::1]", "unique local"),
    ("[fd12:3456::1]", "unique local"),
    ("[fec0::1]", "site-local"),
    ("[ff02::1]", "IPv6 multicast"),
    ("[2001:db8::1]", "IPv6 documentation"),
    ("[100::1]", "discard"),
    ("localhost", "loopback name"),
    ("LOCALHOST.", "loopback name, upper case, rooted"),
    ("api.localhost", "a subdomain of localhost"),
    ("metadata.google.internal", "cloud metadata name"),
    ("user:secret@93.184.216.34", "credentials in the URL"),
]
# The IPv4-translated range (::ffff:0:0/96, SIIT): a translator turns these into the IPv4 address
# they carry.
TRANSLATED = [
    ("[::ffff:0:127.0.0.1]", "IPv4-translated loopback"),
    ("[::ffff:0:7f00:1]", "IPv4-translated loopback, hex"),
    ("[::ffff:0:a00:1]", "IPv4-translated private"),
    ("[::ffff:0:a9fe:a9fe]", "IPv4-translated metadata"),
    ("[::ffff:0:808:808]", "IPv4-translated public: only reachable through a translator"),
]
PUBLIC = ["93.184.216.34", "[2606:4700::1111]", "8.8.8.8"]


def loopback_name() -> str | None:
    """A name of this machine that resolves to loopback only (not localhost), if there is one."""
    name = socket.gethostname()
    try:
        addrs = {a[4][0] for a in socket.getaddrinfo(name, 80, proto=socket.IPPROTO_TCP)}
    except OSError:
        return None
    return name if addrs and all(a.startswith("127.") or a == "::1" for a in addrs) else None


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server as deployed: private targets refused."""
    db = tmp_path_factory.mktemp("ssrf") / "strict.db"
    app = cueapi.App(db, workers=1)
    url = app.serve("127.0.0.1", 0)
    r = httpx.post(url + "/v1/auth/register", json={"email": "strict@example.com"}, timeout=30)
    assert r.status_code == 201, r.text
    yield Server(app, url, r.json()["api_key"], r.json()["webhook_secret"], db)
    app.close()


def cue_body(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": f"c-{abs(hash(url + str(extra)))}", "schedule": FAR, "callback": {"url": url}, **extra}


def check_refused_everywhere(s: Server, host: str) -> None:
    url = f"http://{host}/hook"
    r = s.call("POST", "/v1/cues", cue_body(url))
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_callback_url", (host, r.text)
    r = s.call("POST", "/v1/cues", cue_body("http://93.184.216.34/ok", on_failure={"webhook": url}))
    assert 400 <= r.status_code < 500, (host, r.text)
    r = s.call("PATCH", "/v1/auth/me", {"alert_webhook_url": url})
    assert r.status_code == 400, (host, r.text)


@pytest.mark.parametrize(("host", "why"), REFUSED + TRANSLATED)
def test_every_spelling_of_a_forbidden_address_is_refused_when_stored(
    strict: Server, host: str, why: str
) -> None:
    check_refused_everywhere(strict, host)


def test_a_name_of_this_machine_that_resolves_to_loopback_is_refused(strict: Server) -> None:
    name = loopback_name()
    if name is None:
        pytest.skip("no name of this machine resolves to loopback only")
    check_refused_everywhere(strict, name)


def test_public_addresses_and_updates_go_through_the_same_guard(strict: Server) -> None:
    for host in PUBLIC:
        r = strict.call("POST", "/v1/cues", cue_body(f"http://{host}/hook"))
        assert r.status_code == 201, (host, r.text)
    cue = r.json()
    # Moving a stored cue to a forbidden address is refused the same way.
    r = strict.call("PATCH", f"/v1/cues/{cue['id']}", {"callback": {"url": "http://2130706433/hook"}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_callback_url", r.text
    assert strict.call("GET", f"/v1/cues/{cue['id']}").json()["callback"]["url"] == cue["callback"]["url"]


def test_what_was_allowed_when_stored_is_checked_again_where_it_goes(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The rebinding window: a cue stored while its URL was allowed (here: a server that allowed
    private targets, as a name that resolved to a public address would have been) is delivered by
    a server that checks the address it is about to connect to, and refuses; the receiver on
    loopback never hears a thing."""
    port = receiver.url.rsplit(":", 1)[1]
    hosts = ["127.0.0.1", "localhost", "2130706433", "0x7f.1", "[::ffff:127.0.0.1]", "[::1]"]
    name = loopback_name()
    if name:
        hosts.append(name)
    db = tmp_path / "rebind.db"
    first = start_server(db)
    try:
        ids = []
        for host in hosts:
            r = first.call(
                "POST", "/v1/cues", cue_body(f"http://{host}:{port}/hook", retry={"max_attempts": 0})
            )
            assert r.status_code == 201, (host, r.text)
            ids.append(r.json()["id"])
    finally:
        first.app.close()
    app = cueapi.App(db, workers=1)
    try:
        strict = Server(app, app.serve("127.0.0.1", 0), first.key, first.secret, db)
        for host, cue in zip(hosts, ids, strict=True):
            eid = strict.call("POST", f"/v1/cues/{cue}/fire").json()["id"]
            done = wait_for(
                lambda e=eid: (
                    (x := strict.call("GET", f"/v1/executions/{e}").json())["status"] == "failed" and x
                ),
                20,
                f"the delivery to {host} to be refused",
            )
            assert (done["error_message"] or "").startswith("refused:"), (host, done)
            assert done["http_status"] is None
    finally:
        app.close()
    assert receiver.requests == []
