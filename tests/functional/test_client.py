"""qga-client / AgentClient against real agents and against misbehaving fakes.

Real peers: the C agent (Debian's qemu-guest-agent, /usr/sbin/qemu-ga; if it
is missing these tests FAIL -- CI must install the package -- they are not
skipped) and our own qemu-ga-py (`python -m qga`).
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

from qga.host.cli import EXIT_AGENT_ERROR, EXIT_EXEC_TIMEOUT, EXIT_UNREACHABLE
from qga.host.channel import BUFFER
from qga.host.client import (
    AgentClient,
    AgentDisconnected,
    AgentError,
    AgentTimeout,
)

REPO = Path(__file__).resolve().parents[2]
QEMU_GA = os.environ.get("QGA_REFERENCE_BINARY", "/usr/sbin/qemu-ga")


def _short_tmp(tmp_path: Path) -> Path:
    """AF_UNIX paths are limited to 107 bytes; pytest's tmp paths can be longer."""
    if len(str(tmp_path / "agent.sock")) < 100:
        return tmp_path
    import tempfile
    return Path(tempfile.mkdtemp(prefix="qgac-"))


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


@pytest.fixture(params=["qemu-ga", "qemu-ga-py"])
def c_agent(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Start an agent on a unix-listen socket; yield the socket path.

    Both the C qemu-ga (the reference) and ours: the client must work with each.
    """
    base = _short_tmp(tmp_path)
    sock = base / "agent.sock"
    state = base / "state"
    state.mkdir()
    if request.param == "qemu-ga":
        if not (os.path.isfile(QEMU_GA) and os.access(QEMU_GA, os.X_OK)):
            pytest.fail(f"{QEMU_GA} not found: install the Debian package qemu-guest-agent")
        cmd = [QEMU_GA]
    else:
        cmd = [sys.executable, "-m", "qga"]
    # Log to a file, not a pipe nobody reads (a full pipe would block the agent).
    log_path = base / "agent.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd + ["-m", "unix-listen", "-p", str(sock), "-t", str(state)],
                            stdout=subprocess.DEVNULL, stderr=log, cwd=str(REPO))
    try:
        # The socket file appears at bind(), before listen(): wait until a connect succeeds.
        deadline = time.monotonic() + 60
        while not _accepts(sock):
            if proc.poll() is not None:
                pytest.fail(f"{request.param} exited: {log_path.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                pytest.fail(f"{request.param} did not listen on its socket within 60 s")
            time.sleep(0.02)
        yield str(sock)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)


def run_cli(*args: str, stdin: Optional[bytes] = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `python -m qga.host.cli ARGS` as an administrator would run qga-client."""
    return subprocess.run([sys.executable, "-m", "qga.host.cli", *args], input=stdin,
                          capture_output=True, timeout=timeout, cwd=str(REPO))


# --- against the real C agent -------------------------------------------------------

def test_ping_and_sync(c_agent: str) -> None:
    with AgentClient(c_agent, timeout=5) as agent:
        sync_id = agent.sync()
        assert isinstance(sync_id, int)
        assert agent.execute("guest-ping") == {}
        assert agent.execute("guest-sync", {"id": 42}) == 42


def test_ping_cli(c_agent: str) -> None:
    res = run_cli("-s", c_agent, "ping")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b""


def test_info(c_agent: str) -> None:
    with AgentClient(c_agent) as agent:
        info = agent.execute("guest-info")
    names = {c["name"] for c in info["supported_commands"]}
    assert {"guest-ping", "guest-exec", "guest-file-open", "guest-sync-delimited"} <= names
    res = run_cli("-s", c_agent, "info")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.decode().splitlines()
    assert lines[0] == "version: " + info["version"]
    assert "guest-ping" in lines
    assert "guest-shutdown (no-reply)" in lines
    res = run_cli("-s", c_agent, "--json", "info")
    assert json.loads(res.stdout) == info


def test_osinfo(c_agent: str) -> None:
    res = run_cli("-s", c_agent, "osinfo")
    assert res.returncode == 0, res.stderr
    assert f"kernel-release: {os.uname().release}" in res.stdout.decode().splitlines()


def test_fsfreeze_status(c_agent: str) -> None:
    res = run_cli("-s", c_agent, "fsfreeze", "status")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"thawed\n"


def test_agent_error(c_agent: str) -> None:
    with AgentClient(c_agent) as agent:
        with pytest.raises(AgentError) as info:
            agent.execute("guest-no-such-command")
        assert info.value.cls == "CommandNotFound"
        assert info.value.desc == "The command guest-no-such-command has not been found"
        # The connection stays usable after an error reply.
        assert agent.execute("guest-ping") == {}


def test_exec_output_and_status(c_agent: str) -> None:
    with AgentClient(c_agent) as agent:
        status = agent.run(["/bin/sh", "-c", "printf out; printf err >&2; exit 3"], wait=20)
    assert status["exited"] is True
    assert status["exitcode"] == 3
    assert base64.b64decode(status["out-data"]) == b"out"
    assert base64.b64decode(status["err-data"]) == b"err"

    res = run_cli("-s", c_agent, "exec", "--", "/bin/sh", "-c", "echo hello; echo oops >&2; exit 7")
    assert res.returncode == 7
    assert res.stdout == b"hello\n"
    assert res.stderr == b"oops\n"


def test_exec_path_lookup_and_args_with_dashes(c_agent: str) -> None:
    res = run_cli("-s", c_agent, "exec", "--", "echo", "-n", "--timeout", "x")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"--timeout x"


def test_exec_signal(c_agent: str) -> None:
    res = run_cli("-s", c_agent, "exec", "--", "/bin/sh", "-c", "kill -9 $$")
    assert res.returncode == 128 + 9


def test_exec_timeout(c_agent: str) -> None:
    # The command outlives run_cli's 60 s deadline by far: only --timeout can end the wait.
    res = run_cli("-s", c_agent, "exec", "--timeout", "0.5", "--", "sleep", "600")
    assert res.returncode == EXIT_EXEC_TIMEOUT
    match = re.search(rb"guest process (\d+) still running after 0.5s", res.stderr)
    assert match, res.stderr
    pid = int(match.group(1))
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read() == b"sleep\x00600\x00"
    os.kill(pid, signal.SIGKILL)


def test_exec_spawn_failure(c_agent: str) -> None:
    res = run_cli("-s", c_agent, "exec", "--", "/nonexistent/qga-test-binary")
    assert res.returncode == EXIT_AGENT_ERROR
    assert b"No such file or directory" in res.stderr


def test_cat_and_put_roundtrip(c_agent: str, tmp_path: Path) -> None:
    payload = os.urandom(2 * 1024 * 1024 + 12345)  # several 1 MiB chunks, odd tail
    local = tmp_path / "local.bin"
    local.write_bytes(payload)
    remote = tmp_path / "remote.bin"

    res = run_cli("-s", c_agent, "put", str(local), str(remote))
    assert res.returncode == 0, res.stderr
    assert remote.read_bytes() == payload

    res = run_cli("-s", c_agent, "cat", str(remote))
    assert res.returncode == 0, res.stderr
    assert res.stdout == payload


def test_put_from_stdin_and_small_chunks(c_agent: str, tmp_path: Path) -> None:
    remote = tmp_path / "stdin.txt"
    res = run_cli("-s", c_agent, "put", "-", str(remote), stdin=b"from stdin\n")
    assert res.returncode == 0, res.stderr
    assert remote.read_bytes() == b"from stdin\n"

    import io
    out = io.BytesIO()
    with AgentClient(c_agent) as agent:
        n = agent.read_file(str(remote), out, chunk=3)  # many read round trips
    assert n == 11 and out.getvalue() == b"from stdin\n"


def test_cat_empty_file(c_agent: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    res = run_cli("-s", c_agent, "cat", str(empty))
    assert res.returncode == 0, res.stderr
    assert res.stdout == b""


def test_cat_missing_file(c_agent: str) -> None:
    res = run_cli("-s", c_agent, "cat", "/nonexistent/qga-test")
    assert res.returncode == EXIT_AGENT_ERROR
    assert b"failed to open file '/nonexistent/qga-test'" in res.stderr


def test_raw(c_agent: str) -> None:
    res = run_cli("-s", c_agent, "raw", '{"execute":"guest-sync","arguments":{"id":7},"id":"x"}')
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"return": 7, "id": "x"}
    res = run_cli("-s", c_agent, "raw", '{"execute":"guest-sync"}')
    assert res.returncode == EXIT_AGENT_ERROR
    assert json.loads(res.stdout)["error"]["desc"] == "Parameter 'id' is missing"


def _wait_read_by_peer(sock: socket.socket) -> None:
    """Poll until the peer has read everything sent on ``sock`` (SIOCOUTQ reaches 0)."""
    deadline = time.monotonic() + 60
    while struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]:
        assert time.monotonic() < deadline, "the agent never read the partial request"
        time.sleep(0.01)


def test_sync_flushes_partial_request_left_by_earlier_client(c_agent: str) -> None:
    """The agent's parser state survives reconnects; the 0xFF must flush it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(c_agent)
        s.sendall(b'{"execute":"guest-ping","id":"pa')
        _wait_read_by_peer(s)
    with AgentClient(c_agent, timeout=5) as agent:
        assert agent.execute("guest-ping") == {}


def test_stale_replies_are_skipped(c_agent: str) -> None:
    with AgentClient(c_agent, timeout=5) as agent:
        agent.sync()
        # Requests whose replies nobody reads yet: they precede ours on the wire.
        agent.send_raw(b'{"execute":"guest-sync","arguments":{"id":1}}\n'
                       b'{"execute":"guest-sync","arguments":{"id":2},"id":99}\n')
        assert agent.execute("guest-sync", {"id": 3}) == 3


# --- timeout and failure behaviour against fakes ------------------------------------------

class FakeAgent:
    """A UNIX-socket server thread driven by a per-connection handler."""

    def __init__(self, path: str, handler: Callable[[socket.socket], None], accept: bool = True) -> None:
        self.path = path
        self.handler = handler
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(4)
        self.conns: List[socket.socket] = []
        self.stop = threading.Event()
        self.thread: Optional[threading.Thread] = None
        if accept:
            self.thread = threading.Thread(target=self._serve, daemon=True)
            self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(conn)
            try:
                self.handler(conn)
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join(2)
        for c in self.conns:
            c.close()
        self.listener.close()


def read_requests(conn: socket.socket, stop: threading.Event) -> Iterator[bytes]:
    """Yield raw chunks split at newlines/0xFF, enough for these fakes."""
    conn.settimeout(0.1)
    buf = b""
    while not stop.is_set():
        try:
            data = conn.recv(65536)
        except socket.timeout:
            continue
        if not data:
            return
        buf += data
        while True:
            if buf.startswith(b"\xff"):
                yield b"\xff"
                buf = buf[1:]
                continue
            nl = buf.find(b"\n")
            if nl < 0:
                break
            yield buf[:nl]
            buf = buf[nl + 1:]


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Callable[..., FakeAgent]]:
    base = _short_tmp(tmp_path)
    made: List[FakeAgent] = []

    def make(handler: Callable[[socket.socket], None] = lambda c: None, accept: bool = True) -> FakeAgent:
        fa = FakeAgent(str(base / f"fake{len(made)}.sock"), handler, accept)
        made.append(fa)
        return fa

    yield make
    for fa in made:
        fa.close()
    if base != tmp_path:
        shutil.rmtree(base, ignore_errors=True)


def silent(conn: socket.socket) -> None:
    """Accept and read, never answer (a hung or absent guest)."""
    conn.settimeout(0.1)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            if not conn.recv(65536):
                return
        except socket.timeout:
            continue


def syncing_then(answer: Callable[[dict], Optional[bytes]], stop: threading.Event) -> Callable[[socket.socket], None]:
    """A fake that handles 0xFF and guest-sync-delimited, then calls `answer`."""
    def handler(conn: socket.socket) -> None:
        for msg in read_requests(conn, stop):
            if msg == b"\xff":
                conn.sendall(b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\uFFFD\'"}}\n')
                continue
            req = json.loads(msg)
            if req["execute"] == "guest-sync-delimited":
                # A stale delimited reply of some earlier client first, then ours.
                conn.sendall(b'\xff{"return": 1}\n')
                conn.sendall(b"\xff" + json.dumps({"return": req["arguments"]["id"]}).encode() + b"\n")
                continue
            out = answer(req)
            if out is not None:
                conn.sendall(out)
    return handler


def assert_gives_up(func: Callable[[], object], exc: type) -> None:
    """``func()`` raises ``exc`` rather than waiting for an answer that never comes.

    The bound is a generous deadline, not the client's timeout plus a margin
    (a loaded machine stretches any margin); a client that ignored its
    timeout would wait forever.
    """
    outcome: List[BaseException] = []

    def call() -> None:
        try:
            func()
        except BaseException as err:  # handed to the test thread
            outcome.append(err)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(60)
    assert not caller.is_alive(), "the client was still waiting after 60 s"
    assert len(outcome) == 1 and isinstance(outcome[0], exc), outcome


def test_timeout_when_agent_never_answers(fake: Callable[..., FakeAgent]) -> None:
    fa = fake(silent)
    agent = AgentClient(fa.path, timeout=0.5)
    assert_gives_up(agent.sync, AgentTimeout)
    assert_gives_up(lambda: agent.execute("guest-ping"), AgentTimeout)
    agent.close()


def test_timeout_when_nobody_accepts(fake: Callable[..., FakeAgent]) -> None:
    """QEMU's chardev with no guest agent behind it: connect works, nothing answers."""
    fa = fake(accept=False)
    agent = AgentClient(fa.path, timeout=0.5)
    assert_gives_up(lambda: agent.execute("guest-ping"), AgentTimeout)
    agent.close()


def test_timeout_on_partial_reply(fake: Callable[..., FakeAgent]) -> None:
    stop = threading.Event()
    fa = fake(syncing_then(lambda req: b'{"return": {}, "id": ' + str(req["id"]).encode(), stop))
    agent = AgentClient(fa.path, timeout=0.5)
    agent.sync()
    assert_gives_up(lambda: agent.execute("guest-ping"), AgentTimeout)
    stop.set()
    agent.close()


def test_stale_delimited_reply_and_id_matching(fake: Callable[..., FakeAgent]) -> None:
    stop = threading.Event()

    def answer(req: dict) -> bytes:
        # An unrelated reply first, then the real one.
        return (b'{"return": "stale"}\n'
                + json.dumps({"return": {"ok": req["execute"]}, "id": req["id"]}).encode() + b"\n")

    fa = fake(syncing_then(answer, stop))
    with AgentClient(fa.path, timeout=2) as agent:
        assert agent.execute("guest-whatever") == {"ok": "guest-whatever"}
    stop.set()


def test_raw_lines_keep_their_framing_across_buffer_moves(fake: Callable[..., FakeAgent]) -> None:
    """next_line gives each line as sent (0xFF and newline included), also one whose end
    arrives after the full receive buffer is compacted, and one longer than the buffer."""
    size = BUFFER * 6 // 10
    first = b"\xff" + b"a" * (size - 2) + b"\n"
    second = b"b" * (BUFFER - size + 9) + b"\n"  # all but its last 10 bytes fill the buffer
    longer = b"c" * (3 * BUFFER) + b"\n"
    go = threading.Event()

    def handler(conn: socket.socket) -> None:
        conn.sendall(first + second[:-10])
        go.wait(30)
        conn.sendall(second[-10:] + longer + b"partial")
        conn.shutdown(socket.SHUT_WR)

    fa = fake(handler)
    with AgentClient(fa.path, timeout=30) as agent:
        assert bytes(agent.next_line()) == first
        while len(agent.buffered) < len(second) - 10:
            agent.receive()
        go.set()  # the buffer is full: the rest of the line goes to the start of it
        assert bytes(agent.next_line()) == second
        assert bytes(agent.next_line()) == longer
        assert agent.drain(30) == b"partial"  # up to the end of the stream
        assert agent.buffered == b"" and not agent.connected


def test_sync_skipping_returns_the_bytes_it_skipped(fake: Callable[..., FakeAgent]) -> None:
    """Everything before our delimited reply: a stale reply, the parse error our 0xFF
    provokes and another client's delimited reply, byte for byte."""
    stop = threading.Event()
    fa = fake(syncing_then(lambda req: b'{"return": "stale"}\n', stop))
    with AgentClient(fa.path, timeout=2) as agent:
        agent.sync()
        agent.send_raw(b'{"execute":"guest-ping"}\n')
        assert agent.sync_skipping(5) == (b'{"return": "stale"}\n'
                                          b'{"error": {"class": "GenericError", "desc": "JSON parse error, '
                                          b'stray \'\\uFFFD\'"}}\n'
                                          b'\xff{"return": 1}\n')
        agent.send_raw(b'{"execute":"guest-ping"}\n')
        assert bytes(agent.next_line()) == b'{"return": "stale"}\n'
    stop.set()


def test_disconnect_is_reported(fake: Callable[..., FakeAgent]) -> None:
    fa = fake(lambda conn: conn.close())
    agent = AgentClient(fa.path, timeout=2)
    assert_gives_up(agent.sync, AgentDisconnected)


def test_missing_socket(tmp_path: Path) -> None:
    with pytest.raises(AgentDisconnected):
        AgentClient(str(tmp_path / "absent.sock"), timeout=1).connect()
    res = run_cli("-s", str(tmp_path / "absent.sock"), "ping")
    assert res.returncode == EXIT_UNREACHABLE
    assert b"cannot connect" in res.stderr


def test_cli_timeout_exit_status(fake: Callable[..., FakeAgent]) -> None:
    fa = fake(silent)  # never answers: without --timeout run_cli's 60 s deadline would expire
    res = run_cli("-s", fa.path, "--timeout", "0.5", "ping")
    assert res.returncode == EXIT_UNREACHABLE
    assert b"no reply from the agent within the timeout" in res.stderr


def test_shutdown_no_reply_is_success(fake: Callable[..., FakeAgent]) -> None:
    stop = threading.Event()
    seen: List[dict] = []

    def answer(req: dict) -> Optional[bytes]:
        seen.append(req)
        return None  # guest-shutdown sends nothing on success

    fa = fake(syncing_then(answer, stop))
    res = run_cli("-s", fa.path, "--timeout", "1", "shutdown", "--mode", "reboot")  # 60 s deadline
    stop.set()
    assert res.returncode == 0, res.stderr
    assert seen and seen[0]["execute"] == "guest-shutdown"
    assert seen[0]["arguments"] == {"mode": "reboot"}


def test_shutdown_error_reply(fake: Callable[..., FakeAgent]) -> None:
    stop = threading.Event()

    def answer(req: dict) -> bytes:
        return json.dumps({"id": req["id"], "error": {"class": "GenericError",
                                                      "desc": "child process has failed to shutdown"}}).encode() + b"\n"

    fa = fake(syncing_then(answer, stop))
    res = run_cli("-s", fa.path, "--timeout", "1", "shutdown")
    stop.set()
    assert res.returncode == EXIT_AGENT_ERROR
    assert b"child process has failed to shutdown" in res.stderr


def test_blocked_sync_is_reported(fake: Callable[..., FakeAgent]) -> None:
    stop = threading.Event()

    def handler(conn: socket.socket) -> None:
        for msg in read_requests(conn, stop):
            if msg == b"\xff":
                conn.sendall(b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray"}}\n')
            else:
                conn.sendall(b'{"error": {"class": "CommandNotFound", '
                             b'"desc": "Command guest-sync-delimited has been disabled"}}\n')

    fa = fake(handler)
    agent = AgentClient(fa.path, timeout=2)
    with pytest.raises(AgentError) as info:
        agent.sync()
    assert info.value.cls == "CommandNotFound"
    stop.set()
    agent.close()


def test_usage_errors() -> None:
    res = run_cli("ping", timeout=30)
    assert res.returncode == 2
    res = subprocess.run([sys.executable, "-m", "qga.host.cli", "-s", "/x", "exec"],
                         capture_output=True, cwd=str(REPO), env=dict(os.environ, QGA_SOCKET=""))
    assert res.returncode == 2
