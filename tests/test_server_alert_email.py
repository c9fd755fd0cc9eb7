"""Alert email end to end: a failing cue of a ``cueapi serve`` configured with ``CUEAPI_SMTP_*``
emails its user through a real SMTP server on loopback (aiosmtpd); without SMTP the server starts,
records the email as skipped and says so once; a bad SMTP setting stops the start clearly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cueapi
import pytest
from cueapi.exceptions import ValidationError

from tests.conftest import Receiver, Server, start_server, wait_for
from tests.smtp import SmtpServer

FAR = {"type": "once", "at": "2099-01-01T00:00:00Z"}


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    s = SmtpServer()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOST", "PORT", "SECURITY", "USERNAME", "PASSWORD", "FROM", "CA_FILE", "TIMEOUT_SECONDS"):
        monkeypatch.delenv(f"CUEAPI_SMTP_{name}", raising=False)
    monkeypatch.delenv("CUEAPI_PUBLIC_URL", raising=False)


def failing_cue(server: Server, receiver: Receiver, **fields: object) -> str:
    """A webhook cue whose one attempt fails (the receiver answers 500); returns its execution."""
    receiver.answer = lambda _r: (500, {}, b"", 0.0)
    cue = server.cue(
        name="nightly-backup",
        schedule=FAR,
        callback={"url": receiver.url + "/hook"},
        retry={"max_attempts": 0},
        **fields,
    )
    r = server.call("POST", f"/v1/cues/{cue['id']}/fire")
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def test_a_failure_emails_the_user_with_the_cue_the_error_and_a_link(
    tmp_path: Path, smtp: SmtpServer, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in smtp.env().items():
        monkeypatch.setenv(k, v)
    server = start_server(tmp_path / "mail.db")
    try:
        eid = failing_cue(server, receiver)
        [mail] = smtp.wait(1)
        assert mail.rcpt_tos == ["owner@example.com"]
        m = mail.message
        assert m["Subject"] == "[cueapi] retries_exhausted: nightly-backup"
        text = m.get_content()
        assert "nightly-backup" in text
        assert "server error (500)" in text
        assert f"{server.url}/v1/executions/{eid}" in text
        [alert] = server.call("GET", "/v1/alerts").json()["alerts"]
        assert f"/v1/alerts/{alert['id']}/acknowledge" in text
    finally:
        server.app.close()


def test_on_failure_email_false_sends_no_email(
    tmp_path: Path,
    smtp: SmtpServer,
    receiver: Receiver,
    beacon: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for k, v in smtp.env().items():
        monkeypatch.setenv(k, v)
    server = start_server(tmp_path / "quiet.db")
    try:
        failing_cue(server, receiver, on_failure={"email": False, "webhook": beacon.url + "/failed"})
        # The cue's failure webhook is sent from the same alert as the email would be: once it
        # has arrived, the email (which is not wanted) would have been queued with it.
        beacon.wait(1)
        alerts = server.call("GET", "/v1/alerts").json()["alerts"]
        assert [a["alert_type"] for a in alerts] == ["retries_exhausted"]
        assert smtp.mails == []
    finally:
        server.app.close()


def test_without_smtp_the_email_is_recorded_as_skipped(tmp_path: Path, receiver: Receiver) -> None:
    server = start_server(tmp_path / "nosmtp.db")
    try:
        failing_cue(server, receiver)
        failing_cue_two = server.cue(
            name="second", schedule=FAR, callback={"url": receiver.url + "/hook"}, retry={"max_attempts": 0}
        )
        server.call("POST", f"/v1/cues/{failing_cue_two['id']}/fire")

        def emails() -> list[dict[str, object]]:
            found = []
            for a in server.call("GET", "/v1/alerts").json()["alerts"]:
                one = server.call("GET", f"/v1/alerts/{a['id']}").json()
                found += [n for n in one["notifications"] if n["channel"] == "email"]
            return found

        got = wait_for(
            lambda: len(e := emails()) == 2 and all(n["status"] == "skipped" for n in e) and e,
            15,
            "two skipped emails",
        )
        assert all(n["last_error"] == "email is not configured on this server" for n in got)
    finally:
        server.app.close()


def test_a_bad_smtp_setting_stops_the_start_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUEAPI_SMTP_HOST", "smtp.example.com")
    monkeypatch.setenv("CUEAPI_SMTP_FROM", "not an address")
    app = cueapi.App(tmp_path / "bad.db")
    try:
        with pytest.raises(ValidationError, match="CUEAPI_SMTP_FROM"):
            app.serve("127.0.0.1", 0)
    finally:
        app.close()
