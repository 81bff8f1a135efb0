"""``qga-client``: a host-side client for the QEMU guest agent protocol.

Connects to the host end of the agent channel (the UNIX socket of QEMU's
virtserialport chardev, or an agent's own ``unix-listen`` socket), performs
the ``0xFF`` + ``guest-sync-delimited`` handshake, then runs one command.

Every wait is bounded: libvirt's documentation warns that agent commands can
block forever; this client never does.  Each request carries a fresh ``id``
and replies are matched by it, so a stale reply left in the channel by an
earlier (timed-out) client is skipped instead of being taken as ours.

Under the protocol is the raw framing of :mod:`qga.host.channel` (bytes
out, reply lines in, as sent) that the tests and benchmarks/run.py use.
Standard library only.  The ``qga-client`` command line is
:mod:`qga.host.cli`.
"""
from __future__ import annotations

import base64
import json
import random
import socket
import time
from typing import Any, BinaryIO, Dict, Optional, Sequence

from qga.host.channel import DEFAULT_TIMEOUT, AgentDisconnected, AgentTimeout, Channel, ClientError

__all__ = [
    "AgentClient",
    "ClientError",
    "AgentError",
    "AgentTimeout",
    "AgentDisconnected",
    "DEFAULT_TIMEOUT",
]

CHUNK = 1024 * 1024  # bytes per guest-file-read/-write: replies stay well under 10 MiB

# Request and sync ids come from one generator: seeding one per client costs
# about half a connect (benchmarks/run.py times reconnects).
_RNG = random.Random()


class AgentError(ClientError):
    """The agent answered ``{"error": {"class": ..., "desc": ...}}``."""

    def __init__(self, cls: str, desc: str) -> None:
        super().__init__(f"{cls}: {desc}")
        self.cls = cls
        self.desc = desc


class AgentClient(Channel):
    """A synchronous, timeout-bounded guest agent client.

    The protocol (:meth:`sync`, :meth:`execute` and the helpers built on
    them, which connect when needed) over the raw framing of
    :class:`qga.host.channel.Channel` (:meth:`send_raw`, :meth:`next_line`,
    :meth:`receive`, :attr:`buffered`), which tests use on an open
    connection to assert byte-exact replies.

    >>> with AgentClient("/run/qga.sock", timeout=5) as agent:   # doctest: +SKIP
    ...     agent.execute("guest-ping")
    {}
    """

    def __init__(self, path: Any, timeout: float = DEFAULT_TIMEOUT, family: int = socket.AF_UNIX) -> None:
        super().__init__(path, timeout, family)
        self._next_id = 0  # drawn at the first request: connecting stays cheap

    # -- protocol ---------------------------------------------------------------------

    def _new_id(self) -> int:
        if not self._next_id:
            # Random ids so replies meant for another client (virtio channels
            # do not see host-side reconnects) cannot be mistaken for ours.
            self._next_id = _RNG.randrange(1, 1 << 31)
        self._next_id = (self._next_id + 1) % (1 << 53) or 1
        return self._next_id

    def sync(self, timeout: Optional[float] = None) -> int:
        """Flush the channel and resynchronise: 0xFF + guest-sync-delimited.

        The 0xFF byte resets the agent's parser (discarding any partial request
        an earlier client left behind); the agent answers it with one parse
        error, which is discarded along with any stale replies, because we skip
        everything up to the first 0xFF the agent sends back: that byte only
        ever prefixes a guest-sync-delimited reply.  Stale delimited replies of
        earlier clients are ruled out by checking the (random) id, which is
        returned.
        """
        sync_id = _RNG.randrange(1, 1 << 53)
        self.sync_skipping(sync_id, timeout)
        return sync_id

    def sync_skipping(self, sync_id: int, timeout: Optional[float] = None) -> bytes:
        """:meth:`sync` with the given id; return the bytes it skipped (all
        that came before the delimited reply carrying ``sync_id``)."""
        self.connect()
        deadline = self._deadline(timeout)
        request = {"execute": "guest-sync-delimited", "arguments": {"id": sync_id}}
        self.send_raw(b"\xff" + json.dumps(request).encode() + b"\n", deadline)
        skipped = bytearray()
        while True:
            self._skip_to_delimiter(deadline, skipped)
            line = bytes(self.next_line(deadline, "guest-sync-delimited"))
            reply = parse_object(line[:-1].lstrip(b"\xff").rstrip(b"\r"))
            if reply is not None and reply.get("return") == sync_id:
                self._synced = True
                return bytes(skipped)
            # Otherwise an earlier client's delimited reply: keep looking.
            skipped += b"\xff" + line

    def _skip_to_delimiter(self, deadline: float, skipped: bytearray) -> None:
        """Move input up to the next 0xFF byte into ``skipped``; drop the 0xFF.

        Complete lines met on the way are stale replies or the parse error
        our own 0xFF provokes, except an error about guest-sync-delimited
        itself (e.g. it is blocked): that one is never delimited, so report
        it instead of waiting for the timeout.
        """
        scanned = 0  # buffered bytes known to hold neither 0xFF nor a newline
        while True:
            buf, start, end = self._rbuf, self._start, self._end
            idx = buf.find(b"\xff", start + scanned, end)
            nl = buf.find(b"\n", start + scanned, end)
            if nl >= 0 and (idx < 0 or nl < idx):
                line = bytes(buf[start:nl + 1])
                self._consume(nl + 1)
                scanned = 0
                skipped += line
                reply = parse_object(line[:-1])
                err = reply.get("error") if reply is not None else None
                if isinstance(err, dict) and "guest-sync-delimited" in str(err.get("desc", "")):
                    raise AgentError(str(err.get("class", "GenericError")), str(err.get("desc", "")))
                continue
            if idx >= 0:
                skipped += buf[start:idx]
                self._consume(idx + 1)
                return
            scanned = end - start  # a long stale line is not searched again per chunk
            self.receive(deadline, "guest-sync-delimited")

    def execute(self, name: str, args: Optional[Dict[str, Any]] = None,
                timeout: Optional[float] = None) -> Any:
        """Run one command and return its ``return`` value.

        Raises :class:`AgentError` on an error reply, :class:`AgentTimeout`
        when no reply arrives within ``timeout`` (default: the client's), and
        :class:`AgentDisconnected` if the connection drops.
        """
        reply = self._request(name, args, timeout, expect_reply=True)
        assert reply is not None
        return reply

    def execute_no_reply(self, name: str, args: Optional[Dict[str, Any]] = None,
                         wait: float = 1.0) -> None:
        """Run a command that sends no reply on success (guest-shutdown,
        guest-suspend-*): wait ``wait`` seconds for an error reply only.

        A closed connection counts as success (the guest may already be
        going down).
        """
        self._request(name, args, wait, expect_reply=False)

    def _request(self, name: str, args: Optional[Dict[str, Any]], timeout: Optional[float],
                 expect_reply: bool) -> Any:
        if not self._synced:
            self.sync()
        deadline = self._deadline(timeout)
        req_id = self._new_id()
        request: Dict[str, Any] = {"execute": name}
        if args:
            request["arguments"] = args
        request["id"] = req_id
        self.send_raw(json.dumps(request).encode() + b"\n", deadline)
        while True:
            try:
                line = self.read_line(deadline, name)
            except AgentTimeout:
                if expect_reply:
                    raise
                # Silence is success for no-reply commands; the channel is
                # still in sync because nothing is pending.
                self._synced = True
                return None
            except AgentDisconnected:
                if expect_reply:
                    raise
                return None
            reply = parse_object(line)
            if reply is None or reply.get("id") != req_id:
                continue  # stale or unrelated reply
            if "error" in reply:
                err = reply["error"] if isinstance(reply["error"], dict) else {}
                raise AgentError(str(err.get("class", "GenericError")), str(err.get("desc", "")))
            if "return" not in reply:
                raise ClientError(f"{name}: reply has neither 'return' nor 'error': {line[:200]!r}")
            return reply["return"]

    def raw(self, text: str, timeout: Optional[float] = None) -> bytes:
        """Send ``text`` verbatim and return the next reply line (no 0xFF)."""
        if not self._synced:
            self.sync()
        deadline = self._deadline(timeout)
        data = text.encode()
        if not data.endswith(b"\n"):
            data += b"\n"
        self.send_raw(data, deadline)
        return self.read_line(deadline, "raw request")

    # -- higher-level helpers ------------------------------------------------------

    def read_file(self, path: str, out: BinaryIO, chunk: int = CHUNK) -> int:
        """Copy guest file ``path`` to ``out``; return the number of bytes."""
        handle = self.execute("guest-file-open", {"path": path, "mode": "r"})
        total = 0
        try:
            while True:
                res = self.execute("guest-file-read", {"handle": handle, "count": chunk})
                data = base64.b64decode(res.get("buf-b64", ""))
                out.write(data)
                total += len(data)
                # count 0 without eof happens on non-blocking pipes: stop
                # rather than spin.
                if res.get("eof") or not data:
                    break
        finally:
            self.execute("guest-file-close", {"handle": handle})
        return total

    def write_file(self, src: BinaryIO, path: str, chunk: int = CHUNK) -> int:
        """Copy ``src`` into guest file ``path`` (created/truncated); return bytes."""
        handle = self.execute("guest-file-open", {"path": path, "mode": "wb"})
        total = 0
        try:
            while True:
                data = src.read(chunk)
                if not data:
                    break
                res = self.execute("guest-file-write",
                                   {"handle": handle, "buf-b64": base64.b64encode(data).decode()})
                if res.get("count") != len(data):
                    raise ClientError(f"short write to {path}: {res.get('count')} of {len(data)} bytes")
                total += len(data)
        finally:
            self.execute("guest-file-close", {"handle": handle})
        return total

    def run(self, argv: Sequence[str], wait: Optional[float] = None,
            poll_max: float = 0.5) -> Dict[str, Any]:
        """guest-exec with captured output; poll guest-exec-status until exited.

        ``wait`` bounds the whole run (``None``: no bound on the child, but
        every single request is still bounded by the client timeout).  Raises
        :class:`AgentTimeout` if the child has not exited in time.
        """
        if not argv:
            raise ValueError("empty command")
        args: Dict[str, Any] = {"path": argv[0], "capture-output": True}
        if len(argv) > 1:
            args["arg"] = list(argv[1:])
        pid = self.execute("guest-exec", args)["pid"]
        end = None if wait is None else time.monotonic() + wait
        delay = 0.01
        while True:
            status: Dict[str, Any] = self.execute("guest-exec-status", {"pid": pid})
            if status.get("exited"):
                status["pid"] = pid
                return status
            if end is not None and time.monotonic() + delay > end:
                raise AgentTimeout(f"guest process {pid} still running after {wait:g}s")
            time.sleep(delay)
            delay = min(delay * 2, poll_max)


def parse_object(line: bytes) -> Optional[Dict[str, Any]]:
    """The JSON object on ``line``, or ``None`` if it is not one."""
    try:
        value = json.loads(line.decode("utf-8", "replace"))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
