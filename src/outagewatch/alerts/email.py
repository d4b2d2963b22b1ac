"""Email over SMTP, with STARTTLS (smtplib in a worker thread).

With `starttls` on (the default), the connection is upgraded before login and sending, and a
server that does not offer STARTTLS is a permanent error: mail never goes out in clear text
by accident. The password is never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from outagewatch.alerts.base import Message, NotifierError


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
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.user = user
        self._password = password
        self.starttls = starttls
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"EmailNotifier({self.host}:{self.port}, starttls={self.starttls})"

    async def send(self, config: Mapping[str, Any], message: Message, key: str) -> None:
        to = config["to"]
        recipients = [to] if isinstance(to, str) else list(to)
        mail = self.compose(recipients, message, key)
        await asyncio.to_thread(self._send, mail, recipients)

    def compose(self, recipients: Sequence[str], message: Message, key: str) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = ", ".join(recipients)
        mail["Subject"] = message.subject
        mail["Date"] = formatdate(usegmt=True)
        # The same id for every retry of one alert: mail systems drop duplicates by it.
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        mail["Message-ID"] = f"<{digest}@outagewatch>"
        mail["X-Outagewatch-Delivery"] = key
        mail.set_content(message.text + "\n")
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
