"""guest-file-* and guest-exec over the wire, against the agent process."""
from __future__ import annotations

import base64
import hashlib
import os
import time
from typing import Any, Dict

import pytest

from tests.agentproc import AgentProcess, Conn, start
from tests.qemu_schema import LINUX_NAMES as QEMU_10_2

HELLO = b"Hello World!\n\0"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def conn(agent: AgentProcess) -> Conn:
    c = agent.connect(timeout=60)
    c.sync()
    return c


def test_file_ops_as_qemu_tests_them(conn: Conn, agent_dir: str) -> None:
    h = conn.cmd("guest-file-open", path="foo", mode="w+")  # relative: the agent's cwd
    assert conn.cmd("guest-file-write", handle=h, buf_b64=b64(HELLO)) == {"count": 14, "eof": False}
    assert conn.cmd("guest-file-flush", handle=h) == {}
    assert conn.cmd("guest-file-close", handle=h) == {}
    assert open(os.path.join(agent_dir, "foo"), "rb").read() == HELLO
    h = conn.cmd("guest-file-open", path="foo", mode="r")
    assert conn.cmd("guest-file-read", handle=h) == {"count": 14, "buf-b64": b64(HELLO), "eof": True}
    assert conn.cmd("guest-file-read", handle=h) == {"count": 0, "buf-b64": "", "eof": True}
    assert conn.cmd("guest-file-seek", handle=h, offset=6, whence="set") == {"position": 6, "eof": False}
    assert conn.cmd("guest-file-read", handle=h)["count"] == 8
    conn.cmd("guest-file-close", handle=h)
    os.unlink(os.path.join(agent_dir, "foo"))


def test_wire_order_and_texts(conn: Conn, agent_dir: str) -> None:
    conn.send(b"{'execute':'guest-file-open','arguments':{'path':'bar','mode':'w+'}}\n")
    handle = conn.read_reply()["return"]
    conn.send(b"{'execute':'guest-file-read','arguments':{'handle':%d}}\n" % handle)
    assert conn.read_line() == b'{"return": {"count": 0, "buf-b64": "", "eof": true}}\n'
    conn.send(b"{'execute':'guest-file-seek','arguments':{'handle':%d,'offset':0,'whence':0}}\n" % handle)
    assert conn.read_line() == b'{"return": {"eof": false, "position": 0}}\n'
    reply = conn.request({"execute": "guest-file-seek",
                          "arguments": {"handle": handle, "offset": 0, "whence": "bogus"}})
    assert reply["error"]["desc"] == "Parameter 'whence' does not accept value 'bogus'"
    reply = conn.request({"execute": "guest-file-seek",
                          "arguments": {"handle": handle, "offset": 0, "whence": 1.5}})
    assert reply["error"]["desc"] == "Invalid parameter type for 'whence', expected: integer"
    reply = conn.request({"execute": "guest-file-seek",
                          "arguments": {"handle": handle, "offset": 0, "whence": True}})
    assert reply["error"]["desc"] == "Invalid parameter type for 'whence', expected: GuestFileWhence"
    reply = conn.request({"execute": "guest-file-close", "arguments": {"handle": 1}})
    assert reply["error"] == {"class": "GenericError", "desc": "handle '1' has not been found"}
    conn.cmd("guest-file-close", handle=handle)


@pytest.mark.parametrize("size", [1, 4 * 1024 * 1024, 48 * 1024 * 1024])
def test_round_trip_sha256(conn: Conn, agent_dir: str, size: int) -> None:
    data = os.urandom(size)
    path = os.path.join(agent_dir, "blob")
    h = conn.cmd("guest-file-open", path=path, mode="wb")
    chunk = 4 * 1024 * 1024
    for off in range(0, size, chunk):
        part = data[off:off + chunk]
        assert conn.cmd("guest-file-write", handle=h, buf_b64=b64(part))["count"] == len(part)
    conn.cmd("guest-file-close", handle=h)
    h = conn.cmd("guest-file-open", path=path, mode="rb")
    got = conn.cmd("guest-file-read", handle=h, count=48 * 1024 * 1024, timeout=60)
    conn.cmd("guest-file-close", handle=h)
    assert got["count"] == size
    assert hashlib.sha256(base64.b64decode(got["buf-b64"])).hexdigest() == hashlib.sha256(data).hexdigest()
    os.unlink(path)


def test_handles_persist_across_restart(agent_dir: str) -> None:
    first = start("ours", tmpdir=agent_dir)
    try:
        conn = first.connect()
        conn.sync()
        handles = [conn.cmd("guest-file-open", path="/dev/null", mode="r") for _ in range(3)]
        assert handles == [1000, 1001, 1002]
    finally:
        assert first.stop() == 0
    second = start("ours", tmpdir=agent_dir)
    try:
        conn = second.connect()
        conn.sync()
        assert conn.cmd("guest-file-open", path="/dev/null", mode="r") == 1003
        reply = conn.request({"execute": "guest-file-read", "arguments": {"handle": 1000}})
        assert reply["error"]["desc"] == "handle '1000' has not been found"
    finally:
        assert second.stop() == 0


def poll(conn: Conn, pid: int, timeout: float = 20) -> Dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = conn.cmd("guest-exec-status", pid=pid)
        if status["exited"]:
            return status
        time.sleep(0.01)
    raise AssertionError("child did not finish")


SCRIPT = "echo stdout; echo stderr >&2; echo stdout; echo stderr >&2"


def test_exec_as_qemu_tests_it(conn: Conn) -> None:
    pid = conn.cmd("guest-exec", path="echo", arg=["-n", '" test_str "'], capture_output=True)["pid"]
    status = poll(conn, pid)
    assert status["exitcode"] == 0 and base64.b64decode(status["out-data"]) == b'" test_str "'
    pid = conn.cmd("guest-exec", path="bash", arg=["-c", SCRIPT], capture_output="separated")["pid"]
    status = poll(conn, pid)
    assert base64.b64decode(status["out-data"]) == b"stdout\nstdout\n"
    assert base64.b64decode(status["err-data"]) == b"stderr\nstderr\n"
    pid = conn.cmd("guest-exec", path="bash", arg=["-c", SCRIPT], capture_output="merged")["pid"]
    status = poll(conn, pid)
    assert base64.b64decode(status["out-data"]) == b"stdout\nstderr\nstdout\nstderr\n"
    assert "err-data" not in status
    reply = conn.request({"execute": "guest-exec", "arguments": {"path": "/bin/invalid-cmd42"}})
    assert reply["error"] == {"class": "GenericError", "desc":
                              "Failed to execute child process \u201c/bin/invalid-cmd42\u201d "
                              "(No such file or directory)"}
    reply = conn.request({"execute": "guest-exec-status", "arguments": {"pid": 0}})
    assert reply["error"] == {"class": "GenericError", "desc": "PID 0 does not exist"}


def test_exec_status_wire_order(conn: Conn) -> None:
    pid = conn.cmd("guest-exec", path="sh", arg=["-c", "echo out; echo err >&2; exit 3"],
                   capture_output=True)["pid"]
    poll_line = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        conn.send(b'{"execute":"guest-exec-status","arguments":{"pid":%d}}\n' % pid)
        poll_line = conn.read_line()
        if b'"exited": true' in poll_line:
            break
        time.sleep(0.01)
    assert poll_line == (b'{"return": {"exitcode": 3, "err-data": "ZXJyCg==", "out-data": "b3V0Cg==", '
                         b'"err-truncated": false, "out-truncated": false, "exited": true}}\n')


def test_exec_extensions_over_the_wire(conn: Conn) -> None:
    """x-timeout is an argument extension: always there, invisible unless used."""
    pid = conn.cmd("guest-exec", path="sleep", arg=["30"], x_timeout=0.2)["pid"]
    assert poll(conn, pid) == {"exited": True, "signal": 9}


def test_extension_command_only_when_enabled(conn: Conn) -> None:
    """A stock agent has no x-guest-exec-kill; --extension-commands registers it."""
    names = [c["name"] for c in conn.cmd("guest-info")["supported_commands"]]
    assert names == QEMU_10_2[::-1]  # all 43 of qemu-ga 10.2, in its order, nothing else
    assert conn.request({"execute": "x-guest-exec-kill", "arguments": {"pid": 1}}) == {"error": {
        "class": "CommandNotFound", "desc": "The command x-guest-exec-kill has not been found"}}
    extended = start("ours", extra=["--extension-commands"])
    try:
        c = extended.connect(timeout=60)
        c.sync()
        info = [c["name"] for c in c.cmd("guest-info")["supported_commands"]]
        assert info[0] == "x-guest-exec-kill" and info[1:] == names
        pid = c.cmd("guest-exec", path="sleep", arg=["30"])["pid"]
        assert c.cmd("x-guest-exec-kill", pid=pid, signal=15) == {}
        assert poll(c, pid) == {"exited": True, "signal": 15}
    finally:
        assert extended.stop() == 0, extended.log()


def test_exec_truncation_over_the_wire(conn: Conn) -> None:
    pid = conn.cmd("guest-exec", path="head", arg=["-c", str(16 * 1024 * 1024 + 1), "/dev/zero"],
                   capture_output=True)["pid"]
    status = poll(conn, pid, 60)
    assert status["out-truncated"] is True
    assert len(base64.b64decode(status["out-data"])) == 16 * 1024 * 1024


def test_write_error_is_reported_by_the_write_itself(conn: Conn) -> None:
    """README: the raw descriptor, not stdio: ENOSPC comes back from guest-file-write, not a later flush."""
    h = conn.cmd("guest-file-open", path="/dev/full", mode="w")
    reply = conn.request({"execute": "guest-file-write", "arguments": {"handle": h, "buf-b64": b64(b"hello")}})
    assert reply == {"error": {"class": "GenericError",
                               "desc": "failed to write to file: No space left on device"}}
    assert conn.cmd("guest-file-flush", handle=h) == {}  # nothing was held back to fail later
    assert conn.cmd("guest-file-close", handle=h) == {}
