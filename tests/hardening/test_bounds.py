"""Resource bounds: each cap gives a clear error when reached, never an exception (issue 8).

Input: a message over 64 MiB of tokens, or nested deeper than 1024, is refused
with QEMU's texts and the agent answers sync afterwards.  Files:
``max-file-handles``.  Exec: ``max-concurrent-execs`` (running children) and
``max-exec-records`` (finished results kept unqueried: the oldest are dropped
and a status query for them says so).  Output: replies to a host that does not read
are dropped, whole and oldest first (never one already on its way), past 256 MiB.
"""
from __future__ import annotations

import os
import time

from tests.agentproc import start
from tests.hardening.util import fd_count, rss_kib, wait_reaped


def test_input_size_and_depth_caps_over_socket(agent_dir: str) -> None:
    proc = start("ours", tmpdir=agent_dir)
    try:
        conn = proc.connect(timeout=120)
        conn.sync()
        base = rss_kib(proc.pid)
        conn.send(b'{"execute": "guest-ping", "id": "' + b"a" * (1 << 20))
        for _ in range(64):
            conn.send(b"a" * (1 << 20))
        conn.send(b'"}')
        reply = conn.read_reply(120)
        assert reply == {"error": {"class": "GenericError", "desc": "JSON token size limit exceeded"}}
        conn.sync(1)
        conn.send(b"[" * 1100 + b"]" * 1100)
        reply = conn.read_reply(30)
        assert reply == {"error": {"class": "GenericError", "desc": "JSON nesting depth limit exceeded"}}
        conn.sync(2)
        assert conn.cmd("guest-ping") == {}
        peak = rss_kib(proc.pid) - base
        assert peak < 256 * 1024, f"RSS grew by {peak} KiB for a 65 MiB message"
    finally:
        assert proc.stop() == 0, proc.log()


def test_file_handle_cap(agent_dir: str) -> None:
    path = os.path.join(agent_dir, "f.txt")
    with open(path, "w", encoding="ascii") as f:
        f.write("x")
    proc = start("ours", extra=["--max-file-handles", "5"], tmpdir=agent_dir)
    try:
        conn = proc.connect()
        conn.sync()
        fds = fd_count(proc.pid)
        handles = [conn.cmd("guest-file-open", path=path) for _ in range(5)]
        reply = conn.request({"execute": "guest-file-open", "arguments": {"path": path}})
        assert reply == {"error": {"class": "GenericError",
                                   "desc": "too many open guest files (max-file-handles is 5); "
                                           "close some handles first"}}
        assert fd_count(proc.pid) == fds + 5
        conn.cmd("guest-file-close", handle=handles.pop())
        handles.append(conn.cmd("guest-file-open", path=path))
        for handle in handles:
            conn.cmd("guest-file-close", handle=handle)
        assert fd_count(proc.pid) == fds
    finally:
        assert proc.stop() == 0, proc.log()


def test_concurrent_exec_cap(agent_dir: str) -> None:
    proc = start("ours", extra=["--max-concurrent-execs", "2"], tmpdir=agent_dir)
    try:
        conn = proc.connect()
        conn.sync()
        pids = [conn.cmd("guest-exec", path="/bin/sleep", arg=["30"])["pid"] for _ in range(2)]
        reply = conn.request({"execute": "guest-exec", "arguments": {"path": "/bin/true"}})
        assert reply == {"error": {"class": "GenericError", "desc": "too many guest-exec processes still "
                                                                    "running (max-concurrent-execs is 2)"}}
        for pid in pids:
            os.kill(pid, 9)
        for pid in pids:
            deadline = time.monotonic() + 60
            while not conn.cmd("guest-exec-status", pid=pid)["exited"]:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        assert conn.cmd("guest-exec", path="/bin/true")["pid"] > 0
    finally:
        assert proc.stop() == 0, proc.log()


def test_exec_record_cap(agent_dir: str) -> None:
    proc = start("ours", extra=["--max-exec-records", "3"], tmpdir=agent_dir)
    try:
        conn = proc.connect()
        conn.sync()
        pids = []
        for _ in range(5):
            pids.append(conn.cmd("guest-exec", path="/bin/true")["pid"])
            # Reaped (finished) before the next starts: a defined eviction order.  The
            # status queries below are answered on the loop thread, after its reaper.
            wait_reaped(pids[-1])
        for pid in pids[:2]:
            assert conn.request({"execute": "guest-exec-status", "arguments": {"pid": pid}}) == \
                {"error": {"class": "GenericError", "desc": f"PID {pid} does not exist"}}
        for pid in pids[2:]:
            status = conn.cmd("guest-exec-status", pid=pid)
            assert status["exited"] and status["exitcode"] == 0
        assert "finished record(s) never queried were dropped (max-exec-records is 3)" in proc.log()
    finally:
        assert proc.stop() == 0, proc.log()


def test_read_count_cap(agent_dir: str) -> None:
    path = os.path.join(agent_dir, "f.txt")
    open(path, "w").close()
    proc = start("ours", tmpdir=agent_dir)
    try:
        conn = proc.connect()
        conn.sync()
        handle = conn.cmd("guest-file-open", path=path)
        reply = conn.request({"execute": "guest-file-read",
                              "arguments": {"handle": handle, "count": 48 * 1024 * 1024 + 1}})
        assert reply == {"error": {"class": "GenericError",
                                   "desc": "value '50331649' is invalid for argument count"}}
        conn.cmd("guest-file-close", handle=handle)
    finally:
        assert proc.stop() == 0, proc.log()


def _read_lines_until(sock, last: bytes, timeout: float = 120.0) -> list:
    """Every reply line up to and including the one ending with ``last`` (lines of 64 MiB: no rescans)."""
    sock.settimeout(timeout)
    buf, lines, start = bytearray(), [], 0
    while True:
        nl = buf.find(b"\n", start)
        if nl < 0:
            start = len(buf)
            data = sock.recv(1 << 22)
            assert data, "agent closed the connection"
            buf += data
            continue
        line = bytes(buf[:nl + 1])
        del buf[:nl + 1]
        start = 0
        lines.append(line)
        if line.endswith(last):
            return lines


def test_replies_to_a_host_that_does_not_read_are_dropped_past_256_mib(agent_dir: str) -> None:
    """README: a host that never reads costs at most 256 MiB of queued replies; whole replies are dropped."""
    import json

    count = 48 * 1024 * 1024  # the largest read: a 64 MiB base64 reply, 4 of them just exceed 256 MiB
    proc = start("ours", extra=["-v"], tmpdir=agent_dir)
    try:
        conn = proc.connect()
        conn.sync()
        handle = conn.cmd("guest-file-open", path="/dev/zero")
        read = {"execute": "guest-file-read", "arguments": {"handle": handle, "count": count}}
        conn.send(b"".join(json.dumps(dict(read, id=i)).encode() for i in range(1, 7)) +
                  b'{"execute": "guest-ping", "id": 7}')
        deadline = time.monotonic() + 120
        while "running guest-ping" not in proc.log():  # every reply is queued by then
            assert time.monotonic() < deadline and proc.proc.poll() is None, proc.log()[-2000:]
            time.sleep(0.1)
        lines = _read_lines_until(conn.sock, b'"id": 7}\n')
        replies = [json.loads(line) for line in lines]  # each line a whole reply: none cut in two
        # The first reply was already on its way (partly in the socket) and is kept whole; the
        # next oldest went when the fifth and sixth replies took the queue past 256 MiB.
        assert [r["id"] for r in replies] == [1, 4, 5, 6, 7]
        for reply in replies[:-1]:
            assert reply["return"]["count"] == count and len(reply["return"]["buf-b64"]) == count // 3 * 4
        assert proc.log().count("host is not reading: dropped a reply of ") == 2
        conn.sync()
        assert conn.request({"execute": "guest-ping", "id": 8}) == {"return": {}, "id": 8}
    finally:
        assert proc.stop() == 0, proc.log()[-2000:]
