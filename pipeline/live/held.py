"""A stream whose socket the hub (hub.py) owns: its framing, and its writes that never
block, buffered up to MAX_BUFFERED bytes for a client that reads slowly."""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass, field

from pipeline.live.stream import Stream

log = logging.getLogger(__name__)

MAX_BUFFERED = 256 * 1024  # bytes a slow client may fall behind before it is dropped


@dataclass(eq=False)
class Held:
    """A stream, its non-blocking socket, and the bytes still to send on it."""

    sock: socket.socket
    stream: Stream
    chunked: bool
    pending: bytearray = field(default_factory=bytearray)

    def frame(self, data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data

    def write(self, data: bytes) -> bool:
        """Queue `data` (framed) and send what the socket takes now; False if the stream
        is to be dropped: the client went away, or it fell too far behind."""
        if data:
            self.pending += self.frame(data)
        if not self.pending:
            return True
        try:
            sent = self.sock.send(self.pending)
        except BlockingIOError:
            sent = 0
        except OSError:
            return False
        del self.pending[:sent]
        if len(self.pending) > MAX_BUFFERED:
            owner = self.stream.owner
            log.info("live stream of user %s dropped: the client reads too slowly", owner)
            return False
        return True

    def client_left(self) -> bool:
        """Read what the client sent (it sends nothing while it listens); True once it has
        closed its side or the connection broke."""
        try:
            return not self.sock.recv(4096)
        except BlockingIOError:
            return False
        except OSError:
            return True

    def close(self, goodbye: bool) -> None:
        """Close the socket, with the chunked body's last chunk first if `goodbye`."""
        if goodbye and self.chunked:
            with contextlib.suppress(OSError):
                self.sock.send(b"0\r\n\r\n")
        self.sock.close()
