"""The agent tells systemd READY=1 once its channel is open, pings the watchdog and says STOPPING=1."""
from __future__ import annotations

import os
import socket
import time
from typing import List

from tests.agentproc import start


def _collect(sock: socket.socket, until: str, timeout: float = 10.0) -> List[str]:
    messages: List[str] = []
    deadline = time.monotonic() + timeout
    while not any(until in m for m in messages):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            messages.append(sock.recv(4096).decode())
        except socket.timeout:
            raise AssertionError(f"never got {until!r}; got {messages}") from None
    return messages


def test_ready_watchdog_and_stopping(agent_dir: str) -> None:
    path = os.path.join(agent_dir, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    proc = start("ours", tmpdir=agent_dir, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    try:
        ready = _collect(sock, "READY=1")
        # READY comes after the channel exists: the socket accepts right away.
        conn = proc.connect(timeout=5)
        conn.sync()
        assert any("READY=1" in m and "STATUS=" in m for m in ready)
        # WATCHDOG_PID is unset, so the agent pings (every half period).
        _collect(sock, "WATCHDOG=1")
        conn.close()
    finally:
        status = proc.stop()
    assert status == 0
    assert any("STOPPING=1" in m for m in _collect(sock, "STOPPING=1"))
    sock.close()
