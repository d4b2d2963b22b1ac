"""Email over SMTP, with STARTTLS (smtplib in a worker thread).

With `starttls` on (the default), the connection is upgraded before login and sending, and a
server that does not offer STARTTLS is a permanent error: mail never goes out in clear text
by accident. The password is never logged.
"""

from __future__ import annotations

import asyncio
import email.policy
import hashlib
import re
import smtplib
import ssl
from collections.abc import Callable, Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from outagewatch.alerts.base import Message, Notifier, NotifierError
from outagewatch.alerts.channels.base import ChannelContext, SubscriptionError

_EMAIL = re.compile(r"[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+|[^@\s,<>]+@localhost")
MAX_RECIPIENTS = 50
LONG_LINES = email.policy.default.clone(max_line_length=998)


def is_address(text: str) -> bool:
    """Whether `text` looks like one email address (what subscriptions accept)."""
    return _EMAIL.fullmatch(text) is not None


class EmailNotifier:
    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        sender: str = "outagewatch@localhost",
        user: str = "",
        password: str = "",
        starttls: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = 30.0,
        unsubscribe: Callable[[str], str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.user = user
        self._password = password
        self.starttls = starttls
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.timeout_s = timeout_s
        # A visitor's subscription (config `visitor`): its one-click unsubscribe URL.
        self.unsubscribe = unsubscribe

    def __repr__(self) -> str:
        return f"EmailNotifier({self.host}:{self.port}, starttls={self.starttls})"

    async def send(self, config: Mapping[str, Any], message: Message, key: str) -> None:
        to = config["to"]
        recipients = [to] if isinstance(to, str) else list(to)
        unsubscribe = None
        if config.get("visitor") and self.unsubscribe is not None:
            unsubscribe = self.unsubscribe(str(config["visitor"]))
        mail = self.compose(recipients, message, key, unsubscribe=unsubscribe)
        await asyncio.to_thread(self._send, mail, recipients)

    async def send_text(
        self, to: str, subject: str, text: str, key: str, *, unsubscribe: str | None = None
    ) -> None:
        """Send one plain-text mail that is no alert (a visitor's confirmation request)."""
        mail = self._mail([to], subject, text, key, unsubscribe)
        await asyncio.to_thread(self._send, mail, [to])

    def compose(
        self,
        recipients: Sequence[str],
        message: Message,
        key: str,
        *,
        unsubscribe: str | None = None,
    ) -> EmailMessage:
        return self._mail(recipients, message.subject, message.text, key, unsubscribe)

    def _mail(
        self,
        recipients: Sequence[str],
        subject: str,
        text: str,
        key: str,
        unsubscribe: str | None,
    ) -> EmailMessage:
        # A long List-Unsubscribe URL has no place to fold: allow the RFC 5322 line length
        # rather than have it turned into an encoded word, which mail clients do not follow.
        mail = EmailMessage(policy=LONG_LINES) if unsubscribe is not None else EmailMessage()
        mail["From"] = self.sender
        mail["To"] = ", ".join(recipients)
        mail["Subject"] = subject
        mail["Date"] = formatdate(usegmt=True)
        # The same id for every retry of one alert: mail systems drop duplicates by it.
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        mail["Message-ID"] = f"<{digest}@outagewatch>"
        mail["X-Outagewatch-Delivery"] = key
        if unsubscribe is not None:
            # RFC 8058 one-click: mail clients POST "List-Unsubscribe=One-Click" to the URL.
            mail["List-Unsubscribe"] = f"<{unsubscribe}>"
            mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            text = f"{text}\n\nUnsubscribe: {unsubscribe}"
        mail.set_content(text + "\n")
        return mail

    def _send(self, mail: EmailMessage, recipients: list[str]) -> None:
        where = f"SMTP {self.host}:{self.port}"
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                smtp.ehlo()
                if self.starttls:
                    if not smtp.has_extn("starttls"):
                        raise NotifierError(
                            f"{where} does not offer STARTTLS (set OUTAGEWATCH_SMTP_STARTTLS=0 "
                            "to send in clear text)",
                            permanent=True,
                        )
                    smtp.starttls(context=self.ssl_context)
                    smtp.ehlo()
                if self.user:
                    smtp.login(self.user, self._password)
                refused = smtp.send_message(mail, to_addrs=recipients)
                if refused:
                    raise NotifierError(
                        f"{where} refused recipients: {', '.join(sorted(refused))}",
                        permanent=True,
                    )
        except NotifierError:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise NotifierError(
                f"{where}: login refused ({exc.smtp_code})", permanent=True
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise NotifierError(
                f"{where} refused recipients: {', '.join(sorted(exc.recipients))}", permanent=True
            ) from None
        except smtplib.SMTPResponseException as exc:
            text = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            raise NotifierError(
                f"{where}: {exc.smtp_code} {text}", permanent=500 <= exc.smtp_code < 600
            ) from None
        except ssl.SSLError as exc:
            raise NotifierError(f"{where}: TLS failed: {exc}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifierError(f"{where}: {type(exc).__name__}: {exc}") from None


class EmailChannel:
    """`to`: one address or a list of them; needs the SMTP settings."""

    name = "email"
    fields: tuple[str, ...] = ("to",)
    help = "`to`, an address or a list of them (needs the SMTP settings)."

    def validate(self, body: Mapping[str, Any], ctx: ChannelContext) -> dict[str, Any]:
        if not ctx.settings.smtp_host and self.name not in ctx.injected:
            raise SubscriptionError("email alerts are off: set OUTAGEWATCH_SMTP_HOST (--smtp-host)")
        to = body.get("to")
        addrs = [to] if isinstance(to, str) else to
        if (
            not isinstance(addrs, list)
            or not addrs
            or len(addrs) > MAX_RECIPIENTS
            or not all(isinstance(a, str) and _EMAIL.fullmatch(a) for a in addrs)
        ):
            raise SubscriptionError("`to` must be an email address or a list of them")
        return {"to": addrs}

    def notifier(self, ctx: ChannelContext) -> Notifier:
        s = ctx.settings
        if not s.smtp_host:
            raise NotifierError(
                "email alerts are off: OUTAGEWATCH_SMTP_HOST is not set", permanent=True
            )
        return EmailNotifier(
            s.smtp_host,
            s.smtp_port,
            sender=s.smtp_from,
            user=s.smtp_user,
            password=s.smtp_password,
            starttls=s.smtp_starttls,
            ssl_context=ctx.smtp_ssl_context,
            timeout_s=ctx.attempt_timeout_s,
            unsubscribe=ctx.unsubscribe,
        )


CHANNEL = EmailChannel()
