"""Listening sockets: unix-listen and vsock-listen, one client at a time.

One client at a time: a second one waits in the backlog until the first
leaves (qemu-ga's behaviour).  The JSON parser's state is deliberately *not*
reset between clients.

A reconnect is cheap: the listening socket stays watched while a client is
connected (it is set aside only if a second client actually knocks, which
would otherwise wake the loop for ever), a client that left is followed by an
accept at once (the next one is often already waiting), and an accepted
connection is a bare descriptor, never a socket object.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import _socket  # not socket: building its enums (and importing selectors) costs the start-up 2-3 ms
from typing import Any, Optional

from qga.codec import Reply
from qga.transport.base import Transport
from qga.log import get_logger

log = get_logger(__name__)


def parse_vsock_path(path: str) -> "tuple[int, int]":
    """``CID:PORT`` as qemu-ga accepts it."""
    cid, sep, port = path.partition(":")
    if not sep:
        raise OSError(22, f"invalid vsock path '{path}'")
    return int(cid), int(port)


class ListenTransport(Transport):
    """Accepts one client at a time on a listening socket."""

    family = _socket.AF_UNIX
    listener: Optional[_socket.socket] = None

    def __init__(self, *args, listen_fd: Optional[int] = None, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._listen_fd = listen_fd
        self._watching = False   # the listening socket is in the loop
        self._knocked = False    # it was reported readable while this client is served

    def _bind(self) -> _socket.socket:
        raise NotImplementedError

    def open(self) -> None:
        if self._listen_fd is not None:  # systemd socket activation
            self.listener = _socket.socket(fileno=self._listen_fd)
        else:
            self.listener = self._bind()
        self.listener.setblocking(False)
        self._watch()

    def _watch(self) -> None:
        if not self._watching and self.listener is not None:
            self._watching = True
            self.loop.add_reader(self.listener.fileno(), self._on_knock)

    def _on_knock(self) -> None:
        if self.fd is None:
            self._accept()
        elif not self._knocked:
            # Often stale: the client that just left was followed by an accept
            # at once, and its successor is reported in the same poll.
            self._knocked = True
        else:
            # A second client while one is served: set the socket aside until
            # the first leaves (it would be reported readable on every poll).
            self._watching = False
            self.loop.remove_reader(self.listener.fileno())  # type: ignore[union-attr]  # watched: open

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            # _accept(): the descriptor alone, no socket object to build and detach.
            fd, _ = self.listener._accept()  # type: ignore[attr-defined]
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("accept failed: %s", exc.strerror)
            return
        fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK)   # one syscall; a new socket has no other flag
        self._knocked = False
        self._attach_fd(fd)

    def write(self, data: Reply) -> None:
        if self.fd is None:
            # No client: qemu-ga's write fails and the reply is lost; a later
            # client must not receive replies meant for an earlier one.
            log.debug("no client connected: dropped a reply")
            return
        super().write(data)

    def on_eof(self) -> None:
        self._disconnect()

    def on_io_error(self, exc: OSError) -> None:
        log.warning("client connection error: %s", exc.strerror)
        self._disconnect()

    def _disconnect(self) -> None:
        # Unsent replies belonged to this client; qemu-ga drops them too.
        self.drop_output()
        self._detach_fd()
        self._watch()
        self._accept()

    def close(self) -> None:
        self._detach_fd()
        if self.listener is not None:
            if self._watching:
                self._watching = False
                self.loop.remove_reader(self.listener.fileno())
            self.listener.close()
            self.listener = None


def _listening(family: int, address: Any) -> _socket.socket:
    """A listening stream socket bound to ``address``; nothing left open on failure."""
    sock = _socket.socket(family, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.bind(address)
        sock.listen(1)
    except OSError:
        sock.close()
        raise
    return sock


class UnixListen(ListenTransport):
    """``-m unix-listen -p PATH``: the socket file is replaced at start and left at exit."""

    def _bind(self) -> _socket.socket:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        return _listening(_socket.AF_UNIX, self.path)


class VsockListen(ListenTransport):
    """``-m vsock-listen -p CID:PORT``."""

    def _bind(self) -> _socket.socket:
        return _listening(_socket.AF_VSOCK, parse_vsock_path(self.path))
