"""The framing under :mod:`qga.host.client`: one connection to an agent channel, every wait bounded.

Bytes out (:meth:`Channel.send_raw`), reply lines in as they were sent
(:meth:`Channel.next_line`, views of one reused receive buffer), and what is
buffered; the tests and benchmarks/run.py use it raw to assert byte-exact
replies.  Standard library only.
"""
from __future__ import annotations

import socket
import time
from typing import Any, NoReturn, Optional, TypeVar

DEFAULT_TIMEOUT = 5.0  # seconds; libvirt's guest-sync wait (QEMU_AGENT_WAIT_TIME)
MAX_LINE = 128 * 1024 * 1024  # a guest-file-read of 48 MiB is ~64 MiB of base64
BUFFER = 1024 * 1024  # initial receive buffer; it doubles for longer replies

C = TypeVar("C", bound="Channel")


class ClientError(Exception):
    """Base class of everything :class:`qga.host.client.AgentClient` raises."""


class AgentTimeout(ClientError):
    """No (complete) reply arrived within the timeout."""


class AgentDisconnected(ClientError):
    """The socket could not be connected, or the peer closed it."""


class Channel:
    """A connection to an agent's channel: raw framing, every wait bounded.

    ``_synced`` says whether the stream is known to be in step with the agent;
    the protocol layer (:class:`qga.host.client.AgentClient`) sets it after a
    sync, and a new connection, a close or a timeout (which may leave a late
    reply in the channel) clears it.
    """

    def __init__(self, path: Any, timeout: float = DEFAULT_TIMEOUT, family: int = socket.AF_UNIX) -> None:
        self.path = path
        self.timeout = timeout
        self.family = family
        self._sock: Optional[socket.socket] = None
        # Received bytes not yet consumed are _rbuf[_start:_end]; recv_into
        # fills the reused buffer, lines are views of it (no copy per reply).
        self._rbuf = bytearray(BUFFER)
        self._start = self._end = 0
        self._synced = False

    # -- connection ----------------------------------------------------------------

    def open(self) -> None:
        """Connect, letting the socket's own ``OSError`` through (for callers
        that retry while an agent starts); idempotent."""
        if self._sock is not None:
            return
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._start = self._end = 0
        self._synced = False

    def connect(self) -> None:
        """Connect to the socket (bounded by the timeout); idempotent."""
        try:
            self.open()
        except socket.timeout:
            raise AgentTimeout(f"connecting to {self.path}: timed out after {self.timeout:g}s") from None
        except OSError as exc:
            raise AgentDisconnected(f"cannot connect to {self.path}: {exc.strerror or exc}") from None

    @property
    def sock(self) -> socket.socket:
        """The connected socket (for tests that act on it directly)."""
        if self._sock is None:
            raise AgentDisconnected(f"{self.path}: not connected")
        return self._sock

    @property
    def connected(self) -> bool:
        """Whether the socket is open (the peer closing it or an I/O error closes it)."""
        return self._sock is not None

    def close(self) -> None:
        """Close the connection (safe to call twice)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._synced = False

    def __enter__(self: C) -> C:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw framing, every wait bounded ---------------------------------------------

    def _deadline(self, timeout: Optional[float]) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _bounded(self, deadline: Optional[float], what: str) -> socket.socket:
        """The socket, with its timeout set so that one call ends by ``deadline``
        (``None``: within the client's timeout).

        The socket's own timeout bounds each call, so there is no select()
        per read; it is only changed when it differs.
        """
        sock = self._sock
        if sock is None:
            raise AgentDisconnected(f"{what}: not connected to {self.path}")
        if deadline is None:
            left = self.timeout
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                self._timed_out(what)
        if sock.gettimeout() != left:
            sock.settimeout(left)
        return sock

    def _timed_out(self, what: str) -> NoReturn:
        # The channel may now hold a late reply: force a re-sync next time.
        self._synced = False
        raise AgentTimeout(f"{what}: no reply from the agent within the timeout")

    def send_raw(self, data: bytes, deadline: Optional[float] = None) -> None:
        """Write ``data`` completely before ``deadline`` (an agent that stops
        reading would otherwise block ``sendall`` forever once buffers fill)."""
        sock = self._bounded(deadline, "sending request")
        try:
            sock.sendall(data)  # the timeout bounds the whole sendall
        except socket.timeout:
            self._timed_out("sending request")
        except OSError as exc:
            self.close()
            raise AgentDisconnected(f"sending to {self.path}: {exc.strerror or exc}") from None

    @property
    def buffered(self) -> bytes:
        """What has been received and not consumed yet."""
        return bytes(self._rbuf[self._start:self._end])

    def take_buffered(self) -> bytes:
        """What has been received and not consumed yet, consumed."""
        data = self.buffered
        self._consume(self._end)
        return data

    def _consume(self, end: int) -> None:
        """Drop the buffered bytes before index ``end``."""
        self._start = end
        if end == self._end:
            self._start = self._end = 0

    def receive(self, deadline: Optional[float] = None, what: str = "reading reply") -> int:
        """Receive at least one more byte into the buffer before ``deadline``
        (``None``: within the client's timeout); return how many arrived."""
        sock = self._bounded(deadline, what)
        buf = self._rbuf
        if self._end == len(buf):
            pending = self._end - self._start
            if self._start and pending < len(buf) // 2:
                buf[:pending] = buf[self._start:self._end]  # same size: views stay valid
            elif 2 * len(buf) > MAX_LINE:
                self.close()
                raise ClientError(f"{what}: reply larger than {MAX_LINE} bytes")
            else:  # a new buffer: views of the old one may still be held
                new = bytearray(2 * len(buf))
                new[:pending] = buf[self._start:self._end]
                self._rbuf = buf = new
            self._start, self._end = 0, pending
        try:
            count = sock.recv_into(memoryview(buf)[self._end:])
        except socket.timeout:
            self._timed_out(what)
        except OSError as exc:
            self.close()
            raise AgentDisconnected(f"reading from {self.path}: {exc.strerror or exc}") from None
        if not count:
            self.close()
            raise AgentDisconnected(f"{what}: the agent closed the connection")
        self._end += count
        return count

    def drain(self, quiet: float) -> bytes:
        """Everything buffered and all that arrives until ``quiet`` seconds
        pass without a byte (or the peer closes), consumed."""
        try:
            while True:
                self.receive(time.monotonic() + quiet)
        except (AgentTimeout, AgentDisconnected):
            pass
        data = self.buffered
        self._start = self._end = 0
        return data

    def next_line(self, deadline: Optional[float] = None, what: str = "reading reply") -> memoryview:
        """The next line as received, with its newline and any leading 0xFF.

        A view of the receive buffer, valid until the next read (``bytes()``
        keeps it).  ``deadline`` bounds the whole line; ``None`` bounds each
        read by the client's timeout.
        """
        scan = self._start
        while True:
            nl = self._rbuf.find(b"\n", scan, self._end)
            if nl >= 0:
                view = memoryview(self._rbuf)[self._start:nl + 1]
                self._consume(nl + 1)
                return view
            scanned = self._end - self._start
            self.receive(deadline, what)
            scan = self._start + scanned  # receive() may have moved the bytes

    def read_line(self, deadline: float, what: str = "reading reply") -> bytes:
        """Next ``\\n``-terminated line without the newline and any leading 0xFF.

        Replies are one JSON object per line; only the reply to
        guest-sync-delimited starts with a raw 0xFF byte.
        """
        return bytes(self.next_line(deadline, what)[:-1]).lstrip(b"\xff").rstrip(b"\r")
