"""Alert email through an SMTP relay that refuses (a 5xx or 4xx reply, or no listener at all) or
says nothing (accepts the TCP connection and never greets), against a real ``cueapi serve``
subprocess. Each email is recorded with how it failed and retried as the README says (a 4xx or
an unreachable relay after 5 s, 30 s, …; a 5xx never); a silent relay holds up neither the
deliveries of other cues, nor the cues' failure webhooks, nor the server's shutdown, and the
emails it held are sent after a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Receiver, wait_for
from tests.faults.harness import MB, RssSampler, Serve, instant, refused_port, serve_env, silent_port
from tests.smtp import SmtpServer


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as s:
        yield s


def relay_env(port: int, timeout: float = 5) -> dict[str, str]:
    return serve_env(
        CUEAPI_SMTP_HOST="127.0.0.1",
        CUEAPI_SMTP_PORT=str(port),
        CUEAPI_SMTP_SECURITY="none",
        CUEAPI_SMTP_FROM="alerts@cueapi.test",
        CUEAPI_SMTP_TIMEOUT_SECONDS=str(timeout),
    )


def fail_a_cue(serve: Serve, dead_port: int, **fields: Any) -> str:
    """Fires a cue whose only attempt fails at once (its URL refuses connections): an alert with
    an email to the user. Returns the cue's id."""
    cue = serve.cue(
        callback={"url": f"http://127.0.0.1:{dead_port}/hook"}, retry={"max_attempts": 0}, **fields
    )
    serve.fire(cue)
    return str(cue["id"])


def email_of(serve: Serve, cue_id: str) -> dict[str, Any] | None:
    """The email notification of the cue's alert, once the alert exists."""
    alerts = serve.call("GET", "/v1/alerts", params={"cue_id": cue_id}).json()["alerts"]
    if not alerts:
        return None
    one = serve.call("GET", f"/v1/alerts/{alerts[0]['id']}").json()
    [email] = [n for n in one["notifications"] if n["channel"] == "email"]
    return dict(email)


def email_when(serve: Serve, cue_id: str, what: str, timeout: float = 15, **want: Any) -> dict[str, Any]:
    """Waits until the cue's email notification has the fields ``want``."""
    return wait_for(
        lambda: (n := email_of(serve, cue_id)) is not None and all(n[k] == v for k, v in want.items()) and n,
        timeout,
        what,
    )


def delivers_at_once(serve: Serve, good: Receiver) -> None:
    cue = serve.cue(callback={"url": good.url + "/other"}, retry={"max_attempts": 0})
    started = time.monotonic()
    assert serve.settled(serve.fire(cue), "success", timeout=10)["attempts"] == 1
    assert time.monotonic() - started < 3
    assert serve.health().status_code == 200


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("RCPT", "550 5.1.1 <owner@example.com>: Recipient address rejected"),
        ("DATA", "554 5.7.1 Message rejected as spam"),
    ],
)
def test_a_refusal_for_good_fails_the_email_for_good(
    tmp_path: Path, smtp: SmtpServer, good: Receiver, command: str, reply: str
) -> None:
    smtp.refuse(command, reply)
    with Serve.start(tmp_path / "refused.db", env=serve_env(**smtp.env())) as serve, refused_port() as dead:
        cue_id = fail_a_cue(serve, dead)
        email = email_when(serve, cue_id, "the email to fail", status="failed")
        delivers_at_once(serve, good)
    assert email["attempts"] == 1
    assert email["next_attempt_at"] is None  # a 5xx is not retried
    assert email["sent_at"] is None
    code, text = reply.split(" ", 1)
    assert email["last_error"].startswith(f"the SMTP server 127.0.0.1:{smtp.port} answered {code}")
    assert text.split(" ", 1)[1] in email["last_error"]
    assert smtp.mails == []


def test_a_temporary_refusal_is_retried_until_the_relay_takes_it(
    tmp_path: Path, smtp: SmtpServer, good: Receiver
) -> None:
    smtp.refuse("DATA", "451 4.3.0 Try again later")
    with Serve.start(tmp_path / "data.db", env=serve_env(**smtp.env())) as serve, refused_port() as dead:
        cue_id = fail_a_cue(serve, dead)
        first = email_when(serve, cue_id, "the first try to fail", attempts=1)
        failed_at = time.time()
        assert first["status"] == "pending"
        assert first["last_error"].startswith(f"the SMTP server 127.0.0.1:{smtp.port} answered 451")
        # The second try is due 5 s after the first.
        assert abs(instant(first["next_attempt_at"]) - (failed_at + 5)) < 1.5
        delivers_at_once(serve, good)
        smtp.refuse("DATA", None)
        [mail] = smtp.wait(1, timeout=15)
        sent = email_when(serve, cue_id, "the email to be sent", status="sent")
    assert sent["attempts"] == 2
    assert mail.rcpt_tos == ["owner@example.com"]
    assert mail.message["Subject"].startswith("[cueapi] retries_exhausted: ")


def test_an_unreachable_relay_is_retried_with_backoff(tmp_path: Path, good: Receiver) -> None:
    with (
        refused_port() as relay,
        refused_port() as dead,
        Serve.start(tmp_path / "norelay.db", env=relay_env(relay)) as serve,
    ):
        cue_id = fail_a_cue(serve, dead)
        first = email_when(serve, cue_id, "the first try to fail", attempts=1)
        assert first["status"] == "pending"
        assert first["last_error"].startswith(f"cannot reach the SMTP server 127.0.0.1:{relay}")
        assert "refused" in first["last_error"].lower()
        delivers_at_once(serve, good)
        # 5 s later, the second try; then 30 s.
        second = email_when(serve, cue_id, "the second try", timeout=15, attempts=2)
    assert second["status"] == "pending"
    gap = instant(second["next_attempt_at"]) - instant(first["next_attempt_at"])
    assert 30 <= gap < 30 + 5, gap


def test_a_silent_relay_fails_the_email_at_the_smtp_deadline(tmp_path: Path, good: Receiver) -> None:
    with (
        silent_port() as relay,
        refused_port() as dead,
        Serve.start(tmp_path / "silent.db", env=relay_env(relay, timeout=1)) as serve,
    ):
        cue_id = fail_a_cue(serve, dead)
        email = email_when(serve, cue_id, "the email to time out", attempts=1)
        delivers_at_once(serve, good)
    assert email["status"] == "pending"
    assert email["last_error"] == (
        f"the SMTP server 127.0.0.1:{relay} did not finish within 1 s (CUEAPI_SMTP_TIMEOUT_SECONDS)"
    )


def test_a_silent_relay_holds_up_nothing_and_loses_nothing(
    tmp_path: Path, smtp: SmtpServer, good: Receiver
) -> None:
    """Seventy alerts (more than the notifier reads at once) whose emails hang on a relay that
    never speaks (a 60 s deadline): the cues' failure webhooks still arrive at once, other cues
    are delivered at once, the server stops within its grace period, and after a restart with a
    working relay every email is sent."""
    db = tmp_path / "stuck.db"
    n = 70
    with (
        silent_port() as relay,
        refused_port() as dead,
        Serve.start(db, env=relay_env(relay, timeout=60)) as serve,
    ):
        rss = RssSampler(serve.proc.pid)
        cues = [fail_a_cue(serve, dead, on_failure={"webhook": good.url + f"/failed/{i}"}) for i in range(n)]
        wait_for(
            lambda: {r.path for r in good.requests} >= {f"/failed/{i}" for i in range(n)},
            10,
            "every failure webhook",
        )
        delivers_at_once(serve, good)
        assert all((e := email_of(serve, c)) and e["status"] == "pending" for c in cues)
        grown = rss.stop()
        # Seventy sends waiting on the relay hold a connection and a message each.
        assert grown < 32 * MB, f"the server's memory grew by {grown / MB:.1f} MB"
        print(f"silent relay: peak RSS +{grown / MB:.1f} MB")
        user = (serve.key, serve.secret)
        started = time.monotonic()
        assert serve.stop() == 0
        assert time.monotonic() - started < 10
    with Serve.start(db, env=serve_env(**smtp.env()), user=user) as serve:
        mails = smtp.wait(n, timeout=30)
        assert all(email_when(serve, c, "the email to be sent", status="sent") for c in cues)
    assert len(mails) == n
