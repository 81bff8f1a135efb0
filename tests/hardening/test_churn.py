"""Host churn: disconnect/reconnect cycles, including mid-request and mid-reply (issue 8).

Each cycle connects, then leaves in one of five ways: after a clean sync;
after half a request; after requesting a large reply (guest-info, and a
1 MiB guest-file-read) without reading it; after reading only part of a
large reply; or right after connecting.  The next connection must get its
``0xFF`` + ``guest-sync-delimited`` answered and then exactly the reply to
its own fresh ping, and across the whole run no request id is answered twice.

Budget: ``QGA_CHURN_CYCLES`` (1,000 in CI and in the full run).
"""
from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from typing import Iterator, List

import pytest

from tests.agentproc import AgentProcess, Conn, start
from tests.hardening.util import budget, fd_count, parse_reply_line, rss_kib

CYCLES = budget("QGA_CHURN_CYCLES", 1000, 1000)


@pytest.fixture
def churn_agent() -> Iterator[AgentProcess]:
    """Our agent with a 1 MiB file to read."""
    proc = start("ours")
    with open(os.path.join(proc.tmpdir, "big.dat"), "wb") as f:
        f.write(os.urandom(1 << 20))
    yield proc
    assert proc.stop() == 0, proc.log()


class Tracker:
    """Unique request ids and every reply id seen, on any connection."""

    def __init__(self) -> None:
        self.next_id = 1
        self.answered: Counter = Counter()

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def request(self, name: str, **args: object) -> bytes:
        req = {"execute": name, "id": self.new_id()}
        if args:
            req["arguments"] = args
        return json.dumps(req).encode()

    def note(self, lines: List[bytes]) -> None:
        for line in lines:
            reply = parse_reply_line(line)
            if "id" in reply:
                self.answered[reply["id"]] += 1


def _sync_and_ping(conn: Conn, tracker: Tracker) -> None:
    """Sync (skipping stale bytes of earlier clients), then exactly our ping's reply."""
    sync_id = tracker.new_id()
    conn.send(b"\xff" + json.dumps({"execute": "guest-sync-delimited",
                                     "arguments": {"id": sync_id}}).encode())
    while True:
        line = conn.read_line(20)
        reply = parse_reply_line(line)       # stale replies too must be well-formed lines
        if line.startswith(b"\xff") and reply.get("return") == sync_id:
            break
        tracker.note([line])
    tracker.answered[sync_id] += 1
    ping = tracker.request("guest-ping")
    conn.send(ping)
    line = conn.read_line(20)
    assert parse_reply_line(line) == {"return": {}, "id": tracker.next_id}, line
    tracker.answered[tracker.next_id] += 1


def test_churn(churn_agent: AgentProcess) -> None:
    tracker = Tracker()
    big = os.path.join(churn_agent.tmpdir, "big.dat")
    conn = churn_agent.connect()
    conn.sync()
    conn.close()
    base_fds = None
    base_rss = 0
    kinds = Counter()
    for cycle in range(CYCLES):
        conn = churn_agent.connect(timeout=20)
        _sync_and_ping(conn, tracker)
        if cycle == min(100, CYCLES // 2):  # one client, synced, no handle open: as at the end
            base_fds, base_rss = fd_count(churn_agent.pid), rss_kib(churn_agent.pid)
        kind = cycle % 5
        kinds[kind] += 1
        if kind == 0:                                   # clean
            pass
        elif kind == 1:                                 # mid-request
            req = tracker.request("guest-info")
            conn.send(req[:len(req) // 2])
        elif kind == 2:                                 # large replies requested, never read
            conn.send(b"".join(tracker.request("guest-info") for _ in range(50)))
        elif kind == 3:                                 # mid-reply: read a little of a large reply
            handle = conn.cmd("guest-file-open", path=big, mode="r")
            conn.send(tracker.request("guest-file-read", handle=handle, count=1 << 20))
            conn.sock.recv(1000)
            conn.close()
            conn = churn_agent.connect(timeout=20)
            _sync_and_ping(conn, tracker)
            conn.cmd("guest-file-close", handle=handle)
        elif kind == 4:                                 # connect and leave at once
            conn.close()
            conn = churn_agent.connect(timeout=20)
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
    conn = churn_agent.connect(timeout=20)
    _sync_and_ping(conn, tracker)
    twice = {rid: n for rid, n in tracker.answered.items() if n > 1}
    assert not twice, f"answered more than once: {twice}"
    assert churn_agent.proc.poll() is None
    if base_fds is not None:
        deadline = time.monotonic() + 60  # a handle of an abandoned worker may close late
        while fd_count(churn_agent.pid) > base_fds:
            assert time.monotonic() < deadline, "descriptors leak across reconnects"
            time.sleep(0.05)
        assert rss_kib(churn_agent.pid) - base_rss < 4096, "memory grows across reconnects"
    print(f"churn: {CYCLES} cycles {dict(kinds)}; {sum(tracker.answered.values())} replies checked")
    conn.close()
