"""Email through SMTP_URL (smtp://user:pass@host:port, smtps://..., ?starttls=1)."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline.errors import ConfigError, PermanentError, RetryableError


def send_mail(
    smtp_url: str, *, sender: str, to: str, subject: str, body: str, message_id: str
) -> None:
    """Send one plain-text email. A stable `message_id` lets receivers drop a repeat."""
    url = urlsplit(smtp_url)
    if url.scheme not in ("smtp", "smtps") or not url.hostname:
        raise ConfigError("SMTP_URL must look like smtp://user:pass@host:port or smtps://...")
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message["Message-ID"] = message_id
    message.set_content(body)
    smtp_class = smtplib.SMTP_SSL if url.scheme == "smtps" else smtplib.SMTP
    try:
        with smtp_class(
            url.hostname, url.port or (465 if url.scheme == "smtps" else 25), timeout=10
        ) as smtp:
            if parse_qs(url.query).get("starttls") == ["1"]:
                smtp.starttls()
            if url.username:
                smtp.login(unquote(url.username), unquote(url.password or ""))
            smtp.send_message(message)
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as exc:
        raise PermanentError(f"mail server refused the message: {exc}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise RetryableError(f"mail not sent: {type(exc).__name__}: {exc}") from None
