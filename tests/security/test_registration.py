"""Who may create an account over HTTP. By default (a loopback host) only clients on the server's
machine: a loopback peer, no address a proxy forwarded from elsewhere, a ``Host`` that names the
server without DNS; JSON bodies only as ``application/json``; addresses registered while
registration is open to anyone get no alert email."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cueapi
import httpx
import pytest
from serving import Child, serve

from tests.conftest import Receiver, Server, wait_for
from tests.smtp import SmtpServer

FAR = {"type": "once", "at": "2099-01-01T00:00:00Z"}


def post(child: Child, email: str, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
    h = {"Content-Type": "application/json", **(headers or {})}
    content = kw.pop("content", f'{{"email": "{email}"}}'.encode())
    return httpx.post(child.url + "/v1/auth/register", content=content, headers=h, timeout=30, **kw)


def refused(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    """``cueapi serve`` with no settings: loopback, registration for this machine's clients."""
    with serve(tmp_path_factory.mktemp("reg") / "local.db") as child:
        yield child


def test_the_default_is_this_machines_clients_and_says_so(local: Child) -> None:
    assert "registration open to this machine's clients" in local.log
    assert httpx.get(local.url + "/v1/info", timeout=30).json()["registration"] == "local"
    assert post(local, "me@example.com").status_code == 201


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "203.0.113.7"},
        {"X-Forwarded-For": "127.0.0.1, 203.0.113.7"},  # a client's own claim, then the proxy's truth
        {"X-Forwarded-For": "203.0.113.7, 127.0.0.1"},
        {"X-Forwarded-For": "unknown"},
        {"X-Forwarded-For": "[2001:db8::1]:443"},
        {"X-Real-IP": "198.51.100.2"},
        {"Forwarded": "for=198.51.100.2;proto=https"},
        {"Forwarded": 'for="_hidden"'},
        {"Forwarded": 'for=127.0.0.1, for="[2001:db8::1]"'},
    ],
)
def test_a_request_a_proxy_forwarded_from_elsewhere_does_not_register(
    local: Child, headers: dict[str, str]
) -> None:
    """Behind a reverse proxy on the same machine every peer is loopback: the proxy's headers
    tell where the request came from, and any address that is not loopback refuses it."""
    email = f"fwd-{abs(hash(str(headers)))}@example.com"
    refused(post(local, email, headers), 403, "registration_local_only")
    # Nothing was created: the address registers once it comes from here.
    assert post(local, email).status_code == 201


def test_a_local_proxy_forwarding_a_local_client_registers(local: Child) -> None:
    for i, headers in enumerate(
        [{"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": 'for="[::1]:5000"'}, {"X-Real-IP": "127.0.0.5"}]
    ):
        assert post(local, f"local-proxy-{i}@example.com", headers).status_code == 201


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:8000", "127.0.0.1.nip.io", "localhost.evil.example", "rebind.me:{port}"],
)
def test_a_page_under_another_name_cannot_register(local: Child, host: str) -> None:
    """DNS rebinding: a page whose name resolves to 127.0.0.1 sends its own name as Host."""
    r = post(local, "rebound@example.com", {"Host": host.format(port=local.port)})
    refused(r, 403, "invalid_host")


@pytest.mark.parametrize(
    "host", ["localhost:{port}", "127.0.0.1:{port}", "app.localhost:{port}", "[::1]:{port}"]
)
def test_names_that_need_no_dns_register(local: Child, host: str) -> None:
    r = post(
        local, f"{host.split(':')[0].strip('[]')}-host@example.com", {"Host": host.format(port=local.port)}
    )
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ],
)
def test_a_body_a_cross_site_page_can_send_blind_does_not_register(
    local: Child, content_type: str | None
) -> None:
    """A page of any origin may POST text/plain, a form or an untyped body without asking first:
    none of them registers, though the bytes are valid JSON."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    r = httpx.post(
        local.url + "/v1/auth/register", content=b'{"email": "csrf@example.com"}', headers=headers, timeout=30
    )
    refused(r, 415, "unsupported_media_type")
    if content_type is None:  # checked last: now it may exist
        assert post(local, "csrf@example.com").status_code == 201


def test_json_bodies_elsewhere_need_their_media_type_too(server: Server) -> None:
    """Every route that reads a JSON body: a cross-site page that holds no key cannot use them,
    and even with one the body must say it is JSON."""
    body = b'{"name": "x", "schedule": {"type": "once", "at": "2099-01-01T00:00:00Z"}, "transport": "worker"}'
    r = server.call("POST", "/v1/cues", content=body, headers={"Content-Type": "text/plain"})
    refused(r, 415, "unsupported_media_type")
    assert server.call("GET", "/v1/cues").json()["total"] == 0
    r = server.call("PATCH", "/v1/auth/me", content=b'{"alert_webhook_url": ""}')
    refused(r, 415, "unsupported_media_type")
    ok = server.call(
        "POST", "/v1/cues", content=body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert ok.status_code == 201, ok.text


def own_address() -> str | None:
    """This machine's address on its default route, if it has one (not loopback)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))
        ip = str(s.getsockname()[0])
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") else ip


def test_a_client_on_another_address_does_not_register(tmp_path: Path) -> None:
    """Listening everywhere with registration for local clients: a peer that is not loopback is
    refused, whatever it says in Host."""
    ip = own_address()
    if ip is None:
        pytest.skip("this machine has no address besides loopback")
    with serve(tmp_path / "wide.db", "--host", "0.0.0.0", "--allow-register", "local") as child:
        r = httpx.post(
            f"http://{ip}:{child.port}/v1/auth/register",
            json={"email": "far@example.com"},
            headers={"Host": f"localhost:{child.port}"},
            timeout=30,
        )
        refused(r, 403, "registration_local_only")
        assert post(child, "far@example.com").status_code == 201


def test_any_other_host_is_closed_and_no_register_closes(tmp_path: Path) -> None:
    with serve(tmp_path / "wide.db", "--host", "0.0.0.0") as child:
        assert "registration closed" in child.log
        refused(post(child, "x@example.com"), 403, "registration_closed")
    with serve(tmp_path / "shut.db", "--no-register") as child:
        refused(post(child, "x@example.com"), 403, "registration_closed")


def test_the_public_url_is_a_host_registration_accepts(tmp_path: Path) -> None:
    with serve(tmp_path / "pub.db", "--public-url", "https://cues.example.com/") as child:
        assert post(child, "a@example.com", {"Host": "cues.example.com"}).status_code == 201
        refused(post(child, "b@example.com", {"Host": "other.example.com"}), 403, "invalid_host")


def test_behind_a_trusted_proxy_a_public_client_does_not_register(tmp_path: Path) -> None:
    """The finding: with --trust-forwarded-for, a request the proxy forwarded from a public
    address registered. Now the forwarded address decides."""
    with serve(tmp_path / "proxy.db", "--trust-forwarded-for") as child:
        refused(
            post(child, "pub@example.com", {"X-Forwarded-For": "203.0.113.50"}),
            403,
            "registration_local_only",
        )
        assert post(child, "pub@example.com", {"X-Forwarded-For": "127.0.0.1"}).status_code == 201


# -- open registration: addresses nobody verified get no email -----------------------------------


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    s = SmtpServer()
    for name in ("PORT", "SECURITY", "USERNAME", "PASSWORD", "CA_FILE", "TIMEOUT_SECONDS"):
        monkeypatch.delenv(f"CUEAPI_SMTP_{name}", raising=False)
    for k, v in s.env().items():
        monkeypatch.setenv(k, v)
    yield s
    s.stop()


def test_open_registration_admits_anyone_but_never_emails_them(
    tmp_path: Path, smtp: SmtpServer, receiver: Receiver
) -> None:
    """``--allow-register`` (open): a stranger registers from anywhere, yet the server sends alert
    email only to the address the operator created, and records why the stranger got none."""
    receiver.answer = lambda _r: (500, {}, b"", 0.0)
    app = cueapi.App(tmp_path / "open.db", workers=1)
    try:
        operator_key, _ = app.create_user("operator@example.com")
        url = app.serve("127.0.0.1", 0, allow_register=True, allow_private_targets=True)
        r = httpx.post(
            url + "/v1/auth/register",
            json={"email": "stranger@example.com"},
            headers={"X-Forwarded-For": "203.0.113.9", "Host": "anything.example"},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        stranger_key = r.json()["api_key"]
        with httpx.Client(base_url=url, timeout=30) as http:
            for key in (operator_key, stranger_key):
                auth = {"Authorization": f"Bearer {key}"}
                cue = http.post(
                    "/v1/cues",
                    json={
                        "name": "failing",
                        "schedule": FAR,
                        "callback": {"url": receiver.url + "/hook"},
                        "retry": {"max_attempts": 0},
                    },
                    headers=auth,
                ).json()
                assert http.post(f"/v1/cues/{cue['id']}/fire", headers=auth).status_code == 200
            [mail] = smtp.wait(1)
            assert mail.rcpt_tos == ["operator@example.com"]

            auth = {"Authorization": f"Bearer {stranger_key}"}

            def stranger_email() -> dict[str, Any] | None:
                for a in http.get("/v1/alerts", headers=auth).json()["alerts"]:
                    for n in http.get(f"/v1/alerts/{a['id']}", headers=auth).json()["notifications"]:
                        if n["channel"] == "email":
                            return dict(n)
                return None

            n = wait_for(stranger_email, 15, "the stranger's alert")
            assert n["status"] == "skipped" and "not verified" in n["last_error"], n
        assert [m.rcpt_tos for m in smtp.mails] == [["operator@example.com"]]
    finally:
        app.close()
