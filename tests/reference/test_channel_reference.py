"""A virtio-serial port stays open across a host detach, as in qemu-ga 7.2.

qemu-ga treats EOF on the port (no host process on the chardev, e.g. while
libvirt reconnects after a guest suspend) like EAGAIN: it waits 100 ms and
reads the same descriptor again.  It never closes or reopens the port, and
never looks at the port's path again, because closing the port would tell
the host (VSERPORT_CHANGE) that the agent went away.

The port here is a pty slave in canonical mode: the host side writing VEOF
(^D) makes the agent's read return 0, which is exactly what a virtio port
reports while the host is detached.  Removing the path before the detach
shows that the agent keeps its descriptor; a request written afterwards
gets its reply on that same descriptor.
"""
from __future__ import annotations

import json
import os
import select
import sys
import termios
import time
from typing import List, Tuple

import pytest

from tests.agentproc import REFERENCE_QGA, AgentProcess

pytestmark = pytest.mark.reference


def canonical_pty() -> Tuple[int, str]:
    """(master fd, slave path): line discipline on (VEOF works), no echo, no output mapping."""
    master, slave = os.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST
    attrs[3] = (attrs[3] | termios.ICANON) & ~(termios.ECHO | termios.ECHONL)
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    path = os.ttyname(slave)
    os.close(slave)
    return master, path


def exchange(master: int, sync_id: int, timeout: float = 10.0) -> List[bytes]:
    """Send guest-sync until a reply line arrives; return the lines read."""
    line = json.dumps({"execute": "guest-sync", "arguments": {"id": sync_id}}).encode() + b"\n"
    deadline = time.monotonic() + timeout
    buf = b""
    want = f'{{"return": {sync_id}}}\n'.encode()
    while want not in buf:
        assert time.monotonic() < deadline, f"no reply to guest-sync {sync_id}; read {buf!r}"
        os.write(master, line)
        # One request per second at most: the agent may not have opened the port yet.
        end = min(deadline, time.monotonic() + 1.0)
        while want not in buf and time.monotonic() < end:
            if select.select([master], [], [], max(0.0, end - time.monotonic()))[0]:
                try:
                    buf += os.read(master, 4096)
                except OSError:  # EIO: nobody has the slave open yet
                    time.sleep(0.05)
    return buf.splitlines(keepends=True)


def port_fds(pid: int, target: str) -> List[str]:
    """The agent's descriptors that point at ``target``."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                out.append(fd)
        except OSError:
            pass
    return sorted(out)


@pytest.mark.parametrize("retry", [False, True], ids=["plain", "retry-path"])
@pytest.mark.parametrize("kind", ["reference", "ours"])
def test_host_detach_keeps_the_port_open(kind: str, retry: bool, agent_dir: str) -> None:
    if kind == "reference" and not os.access(REFERENCE_QGA, os.X_OK):
        pytest.fail(f"{REFERENCE_QGA} is missing: install qemu-guest-agent")
    master, pts = canonical_pty()
    link = os.path.join(agent_dir, "port")
    os.symlink(pts, link)
    exe = [REFERENCE_QGA] if kind == "reference" else [sys.executable, "-m", "qga"]
    argv = exe + ["-m", "virtio-serial", "-p", link, "-t", agent_dir] + (["-r"] if retry else [])
    proc = AgentProcess(argv, agent_dir)
    proc.strict_stop = kind == "ours"
    try:
        assert exchange(master, 1)[-1] == b'{"return": 1}\n'
        fds = port_fds(proc.pid, pts)
        assert len(fds) == 1, fds
        # The path goes away, then the host detaches (the agent reads EOF)...
        os.unlink(link)
        os.write(master, bytes([termios.tcgetattr(master)[6][termios.VEOF][0]]))
        # ...and the next request is answered on the descriptor opened at start.
        assert exchange(master, 2)[-1] == b'{"return": 2}\n'
        assert proc.proc.poll() is None, proc.log()
        assert port_fds(proc.pid, pts) == fds
    finally:
        status = proc.stop()
        os.close(master)
    if kind == "ours":
        assert status == 0, proc.log()
