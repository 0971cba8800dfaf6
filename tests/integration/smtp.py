"""A real SMTP server on loopback for the integration suite: aiosmtpd in a thread, keeping
every message it accepts, on a port that stays the same across stop() and start()."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, cast

from aiosmtpd.controller import Controller

from pipeline.dev.procs import free_port


@dataclass(frozen=True)
class Received:
    """One accepted message: the SMTP envelope's recipients and the parsed message."""

    rcpt_tos: tuple[str, ...]
    message: EmailMessage

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        return "" if part is None else str(cast(EmailMessage, part).get_content())


class Inbox:
    """An SMTP server on 127.0.0.1 (aiosmtpd's Controller); `stop()` closes its port."""

    def __init__(self) -> None:
        self.port = free_port()
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        """The `SMTP_URL` that reaches this server."""
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        # A new Controller each time: the port is the one SMTP_URL already names.
        controller = Controller(self, hostname="127.0.0.1", port=self.port, ready_timeout=10)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd's hook for a message's data: keep it, accept it."""
        message = cast(EmailMessage, message_from_bytes(envelope.content, policy=policy.default))
        with self._lock:
            self._messages.append(Received(tuple(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Received]:
        """Every message whose envelope names `address` as a recipient."""
        with self._lock:
            return [m for m in self._messages if address in m.rcpt_tos]
