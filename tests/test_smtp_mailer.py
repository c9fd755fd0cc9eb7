"""The SMTP mailer (src/alerts/email.rs) against a real SMTP server on loopback, through the native
test hook ``_send_test_email``, which reads the ``CUEAPI_SMTP_*`` variables at each call."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cueapi._cueapi import _send_test_email
from cueapi.exceptions import CueAPIError, ValidationError

from tests.smtp import SmtpServer, Tls

RCPT = "ops@example.test"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CUEAPI_SMTP_* setting of the developer's shell reaches these tests."""
    for name in list(os.environ):
        if name.startswith("CUEAPI_SMTP_"):
            monkeypatch.delenv(name)


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    with SmtpServer() as s:
        yield s


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return Tls(tmp_path)


def use(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def failure(to: str = RCPT, subject: str = "s", body: str = "b") -> tuple[bool, int | None, str]:
    """Sends, expecting a failed send (not a settings error): (transient, code, message)."""
    with pytest.raises(CueAPIError) as info:
        _send_test_email(to, subject, body)
    assert not isinstance(info.value, ValidationError), info.value
    attrs = vars(info.value)
    return attrs["transient"], attrs["code"], str(info.value)


def refused_setting(field: str) -> str:
    """Sends, expecting a settings error naming ``field``; returns its message."""
    with pytest.raises(ValidationError) as info:
        _send_test_email(RCPT, "s", "b")
    assert info.value.field == field, str(info.value)
    return str(info.value)


# -- delivery ----------------------------------------------------------------------------------


def test_plain_smtp_delivers_headers_and_utf8_text_intact(
    server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, server.env(FROM="Überwachung <alerts@cueapi.test>"))
    subject = "Cue “nightly-backup” failed 3 times — Größe ✓ " + "long " * 40
    body = "Grüße aus cueapi ✓\n\n.\n.leading dot\nlast line: 東京\n"
    _send_test_email(f"Ops Team <{RCPT}>", subject, body)

    [mail] = server.wait(1)
    assert mail.mail_from == "alerts@cueapi.test"
    assert mail.rcpt_tos == [RCPT]
    assert mail.tls is False and mail.login is None
    m = mail.message
    assert m["From"].addresses[0].display_name == "Überwachung"
    assert m["From"].addresses[0].addr_spec == "alerts@cueapi.test"
    assert m["To"].addresses[0].display_name == "Ops Team"
    assert m["To"].addresses[0].addr_spec == RCPT
    assert m["Subject"] == subject.strip()
    assert m.get_content_type() == "text/plain"
    assert m.get_content_charset() == "utf-8"
    assert m.get_content().replace("\r\n", "\n") == body
    assert m["Auto-Submitted"] == "auto-generated"
    assert m["Message-ID"].endswith("@cueapi.test>")
    assert m["Date"] is not None
    # Non-ASCII travels encoded: no 8BITMIME or SMTPUTF8 needed from the relay.
    assert mail.raw.isascii()


def test_each_send_is_a_message_of_its_own(server: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, server.env())
    for i in range(3):
        _send_test_email(RCPT, f"alert {i}", f"body {i}")
    mails = server.wait(3)
    assert [m.message["Subject"] for m in mails] == ["alert 0", "alert 1", "alert 2"]
    assert len({m.message["Message-ID"] for m in mails}) == 3


def test_starttls_with_auth_and_a_private_ca(tls: Tls, monkeypatch: pytest.MonkeyPatch) -> None:
    password = "s3cret pässwörd"
    with SmtpServer(tls=tls, require_starttls=True, users={"cue": password}) as server:
        use(
            monkeypatch,
            server.env(SECURITY="starttls", USERNAME="cue", PASSWORD=password, CA_FILE=str(tls.ca_file)),
        )
        _send_test_email(RCPT, "over STARTTLS", "hello")
        [mail] = server.wait(1)
        assert mail.tls is True
        assert mail.login == "cue"
        assert server.auth_attempts == [("cue", True)]
        assert mail.message["Subject"] == "over STARTTLS"


def test_implicit_tls_with_auth(tls: Tls, monkeypatch: pytest.MonkeyPatch) -> None:
    with SmtpServer(tls=tls, implicit=True, users={"cue": "pw"}) as server:
        use(
            monkeypatch,
            server.env(SECURITY="tls", USERNAME="cue", PASSWORD="pw", CA_FILE=str(tls.ca_file)),
        )
        _send_test_email(RCPT, "over TLS", "hello")
        [mail] = server.wait(1)
        assert mail.tls is True
        assert mail.login == "cue"


def test_credentials_in_clear_reach_a_loopback_relay(monkeypatch: pytest.MonkeyPatch) -> None:
    with SmtpServer(users={"cue": "pw"}, auth_in_clear=True) as server:
        use(monkeypatch, server.env(SECURITY="none", USERNAME="cue", PASSWORD="pw"))
        _send_test_email(RCPT, "local relay", "hello")
        [mail] = server.wait(1)
        assert mail.login == "cue" and mail.tls is False


# -- failures: permanent or worth retrying -------------------------------------------------------


def test_wrong_password_is_permanent(tls: Tls, monkeypatch: pytest.MonkeyPatch) -> None:
    with SmtpServer(tls=tls, require_starttls=True, users={"cue": "right"}) as server:
        use(
            monkeypatch,
            server.env(SECURITY="starttls", USERNAME="cue", PASSWORD="wrong", CA_FILE=str(tls.ca_file)),
        )
        transient, code, message = failure()
        assert transient is False
        assert code == 535
        assert f"127.0.0.1:{server.port} answered 535" in message
        assert "CUEAPI_SMTP_USERNAME and CUEAPI_SMTP_PASSWORD" in message
        assert "wrong" not in message
        assert server.auth_attempts == [("cue", False)]
        assert server.mails == []


def test_server_down_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    # A port bound but not listening: connections are refused, and nobody else can take it.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        use(
            monkeypatch,
            {
                "CUEAPI_SMTP_HOST": "127.0.0.1",
                "CUEAPI_SMTP_PORT": str(port),
                "CUEAPI_SMTP_SECURITY": "none",
                "CUEAPI_SMTP_FROM": "alerts@cueapi.test",
            },
        )
        transient, code, message = failure()
    assert transient is True
    assert code is None
    assert f"cannot reach the SMTP server 127.0.0.1:{port}" in message
    assert "refused" in message.lower()


def test_a_stalled_server_meets_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Listening, never accepting: the TCP handshake completes, the greeting never comes.
    with socket.socket() as stalled:
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(8)
        port = stalled.getsockname()[1]
        use(
            monkeypatch,
            {
                "CUEAPI_SMTP_HOST": "127.0.0.1",
                "CUEAPI_SMTP_PORT": str(port),
                "CUEAPI_SMTP_SECURITY": "none",
                "CUEAPI_SMTP_FROM": "alerts@cueapi.test",
                "CUEAPI_SMTP_TIMEOUT_SECONDS": "0.5",
            },
        )
        started = time.monotonic()
        transient, code, message = failure()
        took = time.monotonic() - started
    assert transient is True and code is None
    assert "did not finish within 0.5 s (CUEAPI_SMTP_TIMEOUT_SECONDS)" in message
    assert 0.45 <= took < 3.0, took


def test_starttls_is_never_skipped(server: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # The server offers no STARTTLS: the mailer refuses to go on in plain text.
    use(monkeypatch, server.env(SECURITY="starttls"))
    transient, _code, message = failure()
    assert transient is False
    assert "STARTTLS is not supported" in message
    assert server.mails == []


def test_an_unknown_ca_is_permanent(tls: Tls, monkeypatch: pytest.MonkeyPatch) -> None:
    with SmtpServer(tls=tls, require_starttls=True) as server:
        use(monkeypatch, server.env(SECURITY="starttls"))
        transient, code, message = failure()
        assert (transient, code) == (False, None)
        assert "invalid peer certificate" in message
        assert "CUEAPI_SMTP_CA_FILE" in message
        assert server.mails == []


def test_a_certificate_for_another_name_is_permanent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = Tls(tmp_path, "mail.other.test")
    with SmtpServer(tls=other, implicit=True) as server:
        use(monkeypatch, server.env(SECURITY="tls", CA_FILE=str(other.ca_file)))
        transient, _code, message = failure()
        assert transient is False
        assert 'certificate not valid for name "127.0.0.1"' in message
        assert "CUEAPI_SMTP_HOST must be a name the relay's certificate is issued for" in message
        assert server.mails == []


# -- header injection ----------------------------------------------------------------------------


def test_line_breaks_in_the_subject_cannot_inject_headers(
    server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, server.env())
    _send_test_email(RCPT, "Cue failed\r\nBcc: evil@evil.test\r\nX-Injected: yes\n\nbody?", "real body")
    [mail] = server.wait(1)
    assert mail.rcpt_tos == [RCPT]
    assert mail.message["Subject"] == "Cue failed Bcc: evil@evil.test X-Injected: yes body?"
    assert mail.message["Bcc"] is None and mail.message["X-Injected"] is None
    assert mail.message.get_content().strip() == "real body"


@pytest.mark.parametrize(
    "to",
    [
        f"{RCPT}\r\nBcc: evil@evil.test",
        f"{RCPT}\nX-Injected: yes",
        f"{RCPT}, evil@evil.test",
        "Ops <ops@example.test",
        "not an address",
        "",
    ],
)
def test_a_bad_recipient_is_refused_before_connecting(
    to: str, server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, server.env())
    transient, code, message = failure(to=to)
    assert (transient, code) == (False, None)
    assert message.startswith("invalid recipient")
    assert server.mails == []


# -- settings ------------------------------------------------------------------------------------


def test_email_off_when_no_host_is_set() -> None:
    message = refused_setting("CUEAPI_SMTP_HOST")
    assert "not configured" in message


@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    [
        ({"PORT": "0"}, "CUEAPI_SMTP_PORT", "from 1 to 65535"),
        ({"PORT": "70000"}, "CUEAPI_SMTP_PORT", "from 1 to 65535"),
        ({"PORT": "smtp"}, "CUEAPI_SMTP_PORT", "from 1 to 65535"),
        ({"SECURITY": "ssl"}, "CUEAPI_SMTP_SECURITY", "none, starttls or tls"),
        ({"TIMEOUT_SECONDS": "0"}, "CUEAPI_SMTP_TIMEOUT_SECONDS", "more than 0"),
        ({"TIMEOUT_SECONDS": "ten"}, "CUEAPI_SMTP_TIMEOUT_SECONDS", "number of seconds"),
        ({"TIMEOUT_SECONDS": "1e9"}, "CUEAPI_SMTP_TIMEOUT_SECONDS", "at most 600"),
        ({"FROM": ""}, "CUEAPI_SMTP_FROM", "must be set"),
        ({"FROM": "alerts at cueapi"}, "CUEAPI_SMTP_FROM", "not one email address"),
        ({"FROM": "a@cueapi.test\r\nBcc: evil@evil.test"}, "CUEAPI_SMTP_FROM", "line break"),
        ({"HOST": "smtp://127.0.0.1"}, "CUEAPI_SMTP_HOST", "not a URL"),
        ({"HOST": "127.0.0.1:25"}, "CUEAPI_SMTP_HOST", "host:port"),
        ({"USERNAME": "cue"}, "CUEAPI_SMTP_PASSWORD", "must be set when CUEAPI_SMTP_USERNAME is"),
        ({"PASSWORD": "pw"}, "CUEAPI_SMTP_USERNAME", "must be set when CUEAPI_SMTP_PASSWORD is"),
        (
            {"SECURITY": "tls", "CA_FILE": "/nonexistent/ca.pem"},
            "CUEAPI_SMTP_CA_FILE",
            "cannot read /nonexistent/ca.pem",
        ),
        ({"USER": "cue"}, "environment", "did you mean CUEAPI_SMTP_USERNAME?"),
    ],
)
def test_each_bad_setting_is_named(
    overrides: dict[str, str],
    field: str,
    expected: str,
    server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use(monkeypatch, server.env(**overrides))
    message = refused_setting(field)
    assert expected in message, message
    assert server.mails == []


def test_a_ca_file_without_tls_is_refused(
    server: SmtpServer, tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, server.env(CA_FILE=str(tls.ca_file)))
    assert "no TLS to verify" in refused_setting("CUEAPI_SMTP_CA_FILE")


def test_a_ca_file_without_certificates_is_refused(
    server: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_only = tmp_path / "key.pem"
    key_only.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    use(monkeypatch, server.env(SECURITY="starttls", CA_FILE=str(key_only)))
    assert "holds no PEM certificate" in refused_setting("CUEAPI_SMTP_CA_FILE")


def test_settings_without_a_host_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUEAPI_SMTP_FROM", "alerts@cueapi.test")
    message = refused_setting("CUEAPI_SMTP_HOST")
    assert "CUEAPI_SMTP_FROM is" in message


@pytest.mark.parametrize("host", ["192.0.2.10", "mail.example.test"])
def test_credentials_never_go_in_clear_to_another_host(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    use(
        monkeypatch,
        {
            "CUEAPI_SMTP_HOST": host,
            "CUEAPI_SMTP_SECURITY": "none",
            "CUEAPI_SMTP_USERNAME": "cue",
            "CUEAPI_SMTP_PASSWORD": "pw",
            "CUEAPI_SMTP_FROM": "alerts@cueapi.test",
        },
    )
    message = refused_setting("CUEAPI_SMTP_SECURITY")
    assert f"in clear to {host}" in message
    assert "loopback" in message
