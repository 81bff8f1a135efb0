"""The channel's output queue: replies in pieces, a host that does not read."""
from __future__ import annotations

import os
import socket

import pytest

from qga.loop import Loop
from qga.transport import base
from qga.transport.base import Transport


class PairTransport(Transport):
    """A real Transport on one end of a socket pair (the test holds the other)."""

    def __init__(self, loop: Loop, sock: socket.socket) -> None:
        super().__init__(loop, "pair", lambda data: None, lambda msg: None)
        self._sock = sock

    def open(self) -> None:
        self._sock.setblocking(False)
        self._attach_fd(self._sock.detach())

    def on_eof(self) -> None:
        pass


@pytest.fixture
def pair():
    loop = Loop()
    ours, host = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    t = PairTransport(loop, ours)
    t.open()
    yield t, host, loop
    t.close()
    host.close()
    loop.close()


def drain(host: socket.socket, loop: Loop, last: bytes) -> bytes:
    """Read as the host, letting the loop flush what is queued, until ``last`` arrives."""
    got = b""
    host.settimeout(5)
    while not got.endswith(last):
        loop.call_later(0, loop.stop)
        loop.run()
        got += host.recv(1 << 20)
    return got


def test_reply_in_pieces_arrives_whole_and_in_order(pair) -> None:
    t, host, loop = pair
    big = os.urandom(1 << 20)
    t.write(b"first\n")
    t.write([b'{"a": "', big, b'"}\n'])
    t.write(b"last\n")
    expected = b"first\n" + b'{"a": "' + big + b'"}\n' + b"last\n"
    assert drain(host, loop, b"last\n") == expected


def test_a_host_that_does_not_read_loses_whole_replies_never_half_of_one(pair, monkeypatch) -> None:
    t, host, loop = pair
    monkeypatch.setattr(base, "MAX_PENDING_OUTPUT", 300_000)
    replies = [bytes([65 + i]) * 100_000 + b"\n" for i in range(8)]
    t.write([replies[0][:50], replies[0][50:]])   # partly written at once, rest queued
    for r in replies[1:]:
        t.write(r)
    received = drain(host, loop, replies[-1])
    lines = received.split(b"\n")[:-1]
    assert lines[0] == replies[0][:-1]                      # the half-written one is completed
    assert lines[-1] == replies[-1][:-1]                    # the newest is kept
    assert all(line + b"\n" in replies for line in lines)   # no reply cut or spliced
    assert len(lines) < len(replies)                        # and some were dropped



def _one_pass(loop: Loop) -> None:
    """One poll of the loop and the callbacks of what it reported."""
    loop.call_later(0, loop.stop)
    loop.run()


def test_unix_listen_reconnects_and_queues_without_spinning(tmp_path) -> None:
    from qga.transport.listen import UnixListen
    loop = Loop()
    path = str(tmp_path / "sock")
    got: list = []
    t = UnixListen(loop, path, lambda data: got.append(bytes(data)), lambda msg: None)
    t.open()
    listen_fd = t.listener.fileno()

    def client() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        return sock

    try:
        first = client()
        _one_pass(loop)
        assert t.fd is not None and os.get_blocking(t.fd) is False   # writes must never block
        _one_pass(loop)   # a quiet poll: then epoll reports the first leaving before the next knocking
        # The next client is waiting before the loop sees the first leave: it is
        # accepted in the same pass, and the poll's now stale report of the
        # listening socket does not set it aside.
        first.close()
        second = client()
        _one_pass(loop)
        assert t.fd is not None and loop._callbacks(listen_fd)[0] is not None
        second.sendall(b"two")
        _one_pass(loop)
        assert got == [b"two"]
        # A third client knocks while the second is served: once it is seen
        # twice the listening socket is set aside, so polls do not spin on it.
        third = client()
        _one_pass(loop)
        _one_pass(loop)
        assert loop._callbacks(listen_fd) == (None, None)
        second.close()
        _one_pass(loop)
        assert t.fd is not None and loop._callbacks(listen_fd)[0] is not None
        third.sendall(b"three")
        _one_pass(loop)
        assert got == [b"two", b"three"]
        third.close()
    finally:
        t.close()
        loop.close()
