"""A real SMTP server on loopback for tests: aiosmtpd in a thread of its own, on a socket bound to
port 0 before the server starts (no fixed port, no race for a free one), collecting every message
it accepts. Optional STARTTLS (required or not), implicit TLS and AUTH with a table of users; the
certificates come from a private CA made by trustme, whose PEM file is what ``CUEAPI_SMTP_CA_FILE``
points at.

    with SmtpServer() as server:
        ...send to server.host / server.port...
        [mail] = server.wait(1)
        assert mail.message["Subject"] == "..."
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
import threading
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class Mail:
    """One accepted message: the envelope, the parsed message, and how the session looked."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    login: str | None
    tls: bool


class Tls:
    """A private CA and a server certificate for ``names`` (IP addresses or host names)."""

    def __init__(self, directory: Path, *names: str) -> None:
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert(*(names or ("127.0.0.1", "localhost")))
        self.ca_file = directory / "smtp-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(ctx)
        return ctx


class _Inbox:
    """The aiosmtpd handler: records each message and wakes waiters."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.cond = threading.Condition()
        # A reply (say "550 5.1.1 no such user") to give instead of accepting, by command.
        self.refusals: dict[str, str] = {}

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        refusal = self.refusals.get("RCPT")
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        refusal = self.refusals.get("DATA")
        if refusal:
            return refusal
        raw = envelope.original_content or b""
        # session.auth_data is what the authenticator returned (login_data is deprecated).
        auth = session.auth_data if session.authenticated else None
        mail = Mail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            raw=raw,
            message=email.message_from_bytes(raw, _class=EmailMessage, policy=email.policy.default),
            login=auth.login.decode() if isinstance(auth, LoginPassword) else None,
            # session.ssl is set only after STARTTLS; the transport knows about implicit TLS too.
            tls=server.transport is not None and server.transport.get_extra_info("ssl_object") is not None,
        )
        with self.cond:
            self.mails.append(mail)
            self.cond.notify_all()
        return "250 Message accepted for delivery"


class _BoundController(Controller):
    """aiosmtpd's threaded controller on a socket bound before start: ``Controller(port=0)``
    would bind a free port but then probe port 0 to see that the server is up."""

    def __init__(self, handler: Any, sock: socket.socket, **kwargs: Any) -> None:
        self._sock = sock
        super().__init__(handler, hostname="127.0.0.1", port=sock.getsockname()[1], **kwargs)

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)


class SmtpServer:
    """An SMTP server on ``127.0.0.1:<free port>``.

    ``tls``: with ``implicit=False`` the server offers STARTTLS (``require_starttls``: and refuses
    anything else first); with ``implicit=True`` it speaks TLS from the first byte.
    ``users``: login → password; when given, AUTH (PLAIN, LOGIN) is required before MAIL, and offered
    only over TLS unless ``auth_in_clear`` (then it is offered, not required: aiosmtpd warns when
    AUTH is required without TLS, and warnings are errors here).
    """

    def __init__(
        self,
        *,
        tls: Tls | None = None,
        implicit: bool = False,
        require_starttls: bool = False,
        users: dict[str, str] | None = None,
        auth_in_clear: bool = False,
    ) -> None:
        self.inbox = _Inbox()
        self.users = dict(users or {})
        self.auth_attempts: list[tuple[str, bool]] = []
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.host = "127.0.0.1"
        self.port: int = sock.getsockname()[1]
        smtp_kwargs: dict[str, Any] = {
            # aiosmtpd would otherwise ask DNS for this machine's FQDN.
            "server_hostname": "smtp.test",
            # A stalled client must not hold a test up for aiosmtpd's default 300 s.
            "timeout": 30,
        }
        if tls is not None and not implicit:
            smtp_kwargs["tls_context"] = tls.server_context()
            smtp_kwargs["require_starttls"] = require_starttls
        if users is not None:
            smtp_kwargs["authenticator"] = self._authenticate
            if implicit or auth_in_clear:
                # aiosmtpd counts only STARTTLS as TLS: on an implicit-TLS socket it would hide
                # AUTH unless told that TLS is not required for it. The socket is TLS anyway.
                smtp_kwargs["auth_require_tls"] = False
            else:
                smtp_kwargs["auth_required"] = True
        self.controller = _BoundController(
            self.inbox,
            sock,
            ssl_context=tls.server_context() if tls is not None and implicit else None,
            **smtp_kwargs,
        )
        self.controller.start()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = False
        login = ""
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode()
            ok = self.users.get(login) == auth_data.password.decode()
        self.auth_attempts.append((login, ok))
        # handled=False: aiosmtpd answers the refusal (535) itself. Its default, handled=True, means
        # "the authenticator already answered", and the client would wait for a reply forever.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def refuse(self, command: str, reply: str | None) -> None:
        """From now on answers ``command`` (``"RCPT"`` or ``"DATA"``) with ``reply`` instead of
        accepting it; ``None`` accepts again."""
        if reply is None:
            self.inbox.refusals.pop(command, None)
        else:
            self.inbox.refusals[command] = reply

    @property
    def mails(self) -> list[Mail]:
        with self.inbox.cond:
            return list(self.inbox.mails)

    def wait(self, n: int, timeout: float = 10.0) -> list[Mail]:
        """Waits until at least ``n`` messages arrived; returns them all."""
        deadline = time.monotonic() + timeout
        with self.inbox.cond:
            while len(self.inbox.mails) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {n} messages, got {len(self.inbox.mails)}")
                self.inbox.cond.wait(left)
            return list(self.inbox.mails)

    def env(self, **overrides: str) -> dict[str, str]:
        """The ``CUEAPI_SMTP_*`` settings that point at this server (plain text, no AUTH, a 5 s
        deadline), with ``overrides`` (``SECURITY="starttls"`` sets ``CUEAPI_SMTP_SECURITY``)."""
        env = {
            "CUEAPI_SMTP_HOST": self.host,
            "CUEAPI_SMTP_PORT": str(self.port),
            "CUEAPI_SMTP_SECURITY": "none",
            "CUEAPI_SMTP_FROM": "cueapi alerts <alerts@cueapi.test>",
            "CUEAPI_SMTP_TIMEOUT_SECONDS": "5",
        }
        env.update({f"CUEAPI_SMTP_{k}": v for k, v in overrides.items()})
        return env

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> SmtpServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = ["Mail", "SmtpServer", "Tls"]
