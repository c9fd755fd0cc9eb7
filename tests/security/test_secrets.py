"""Secrets stay where they belong: API keys, webhook and alert secrets, callback header values and
the SMTP password never appear in the server's log, in error answers, in another tenant's answers
or in a file others may read — even while deliveries, alert webhooks and alert emails fail and are
logged."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import httpx
import pytest
from serving import serve

from tests.conftest import Receiver, wait_for
from tests.smtp import SmtpServer

FAR = {"type": "once", "at": "2099-01-01T00:00:00Z"}
SMTP_PASSWORD = "smtp-pass-0f1e2d3c4b5a"
CALLBACK_SECRETS = ("Bearer cb-token-9a8b7c6d", "cb-api-key-5e4f3a2b")


@pytest.fixture
def smtp() -> SmtpServer:
    s = SmtpServer(users={"alerts": "the-right-password"}, auth_in_clear=True)
    yield s  # type: ignore[misc]
    s.stop()


def test_no_secret_reaches_the_log_an_error_answer_or_a_readable_file(
    tmp_path: Path, smtp: SmtpServer, receiver: Receiver
) -> None:
    receiver.answer = lambda _r: (500, {"Content-Type": "text/plain"}, b"receiver says no", 0.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUEAPI_")}
    env.update(smtp.env(USERNAME="alerts", PASSWORD=SMTP_PASSWORD))
    secrets: list[str] = [SMTP_PASSWORD, *CALLBACK_SECRETS]
    answers: list[httpx.Response] = []
    with (
        serve(tmp_path / "secrets.db", "--allow-private-targets", env=env) as child,
        httpx.Client(base_url=child.url, timeout=30) as http,
    ):
        r = child.register("owner@example.com")
        key, secret = r.json()["api_key"], r.json()["webhook_secret"]
        secrets += [key, secret]
        auth = {"Authorization": f"Bearer {key}"}
        alert_secret = http.get("/v1/auth/alert-webhook-secret", headers=auth).json()["alert_webhook_secret"]
        secrets.append(alert_secret)
        assert http.patch(
            "/v1/auth/me", json={"alert_webhook_url": receiver.url + "/alerts"}, headers=auth
        ).is_success
        headers = {"Authorization": CALLBACK_SECRETS[0], "X-Api-Key": CALLBACK_SECRETS[1]}
        cue = http.post(
            "/v1/cues",
            json={
                "name": "leaky",
                "schedule": FAR,
                "callback": {"url": receiver.url + "/hook", "headers": headers},
                "retry": {"max_attempts": 0},
            },
            headers=auth,
        ).json()
        fired = http.post(f"/v1/cues/{cue['id']}/fire", headers=auth).json()["id"]

        # Requests that fail, each carrying a secret the answer must not repeat.
        wrong_key = "cue_sk_" + "d" * 48
        secrets.append(wrong_key)
        answers.append(http.get("/v1/cues", headers={"Authorization": f"Bearer {wrong_key}"}))
        answers.append(
            http.post(
                "/v1/cues",
                json={
                    "name": "bad",
                    "schedule": {"type": "recurring", "cron": "nope"},
                    "callback": {"url": receiver.url, "headers": headers},
                },
                headers=auth,
            )
        )
        answers.append(
            http.post(
                "/v1/cues",
                json={
                    "name": "bad",
                    "schedule": FAR,
                    "callback": {"url": "http://x", "headers": {"X": 5, "Y": CALLBACK_SECRETS[1]}},
                },
                headers=auth,
            )
        )
        answers.append(
            http.post(
                "/v1/cues",
                content=f'{{"name": "{CALLBACK_SECRETS[1]}"'.encode(),
                headers={**auth, "Content-Type": "application/json"},
            )
        )
        answers.append(http.post("/v1/cues", content=b"{}", headers={**auth, "Content-Type": "text/plain"}))
        answers.append(http.get(f"/v1/executions/{secret}", headers=auth))
        # An echo keeps the headers that arrived, credentials redacted.
        token = "leak-check-0123456789"
        http.post(
            f"/v1/echo/{token}",
            json={},
            headers={"Authorization": CALLBACK_SECRETS[0], "Cookie": "c=" + secret},
        )
        echoed = http.get(f"/v1/echo/{token}", headers=auth).json()
        assert (
            echoed["headers"]["authorization"] == "[redacted]" and echoed["headers"]["cookie"] == "[redacted]"
        )

        # Wait for the failures to be logged: the delivery, the alert webhook, the SMTP login.
        wait_for(lambda: smtp.auth_attempts, 30, "the SMTP login")
        wait_for(lambda: any(h.path == "/alerts" for h in receiver.requests), 30, "the alert webhook")

        # What the server recorded about the failures (the delivery's error and response, each
        # notification's last error): diagnostics too, and free of secrets.
        def alert_records() -> list[str]:
            alerts = http.get("/v1/alerts", headers=auth).json()["alerts"]
            found = [http.get(f"/v1/alerts/{a['id']}", headers=auth).json() for a in alerts]
            failed = [
                n for a in found for n in a["notifications"] if n["channel"] == "email" and n["last_error"]
            ]
            return [str(a) for a in found] if failed else []

        records = wait_for(alert_records, 30, "the email's failure to be recorded")
        assert "535" in " ".join(records) or "auth" in " ".join(records).lower(), records
        execution = http.get(f"/v1/executions/{fired}", headers=auth).text
        records.append(execution)
        assert [s for s in (SMTP_PASSWORD, *CALLBACK_SECRETS) if any(s in t for t in records)] == []

        # Rotation: the old key and secret are secrets too.
        confirm = {**auth, "X-Confirm-Destructive": "true"}
        new_key = http.post("/v1/auth/key/regenerate", headers=confirm).json()["api_key"]
        auth = {"Authorization": f"Bearer {new_key}"}
        confirm = {**auth, "X-Confirm-Destructive": "true"}
        new_secret = http.post("/v1/auth/webhook-secret/regenerate", headers=confirm).json()["webhook_secret"]
        secrets += [new_key, new_secret]
        answers.append(http.get("/v1/cues", headers={"Authorization": f"Bearer {key}"}))  # the revoked key

        # Lists answer the owner's own cues: never a key or signing secret.
        for path in (
            "/v1/cues",
            "/v1/executions?status=all",
            "/v1/alerts",
            "/v1/workers",
            "/v1/usage",
            "/v1/auth/me",
        ):
            text = http.get(path, headers=auth).text
            for s in (key, new_key, secret, new_secret, alert_secret, SMTP_PASSWORD):
                assert s not in text, (path, s)

        child.proc.send_signal(signal.SIGTERM)
        assert child.proc.wait(timeout=60) == 0
        wait_for(lambda: "stopped" in child.log or child.proc.poll() is not None, 10, "the log to end")

    log = child.log
    assert "listening on" in log
    assert [s for s in secrets if s in log] == [], log
    for r in answers:
        assert r.status_code >= 400, r.text
        assert [s for s in secrets if s in r.text] == [], (r.status_code, r.text)
    # Files: whatever holds a secret is readable by its owner only.
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if any(s.encode() in data for s in secrets):
                assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
