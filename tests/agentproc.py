"""Run an agent (ours or the system qemu-ga) on a unix socket and talk to it.

This is how QEMU's own tests drive qemu-ga: ``-m unix-listen -t TMP -p
TMP/sock``.  The client (qga-client's, in its raw mode) works on raw bytes
so tests can assert byte-exact replies, 0xFF markers and error cascades.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence

from qga.host import client

REPO = Path(__file__).resolve().parent.parent
REFERENCE_QGA = "/usr/sbin/qemu-ga"


class AgentTimeout(AssertionError):
    """The agent did not answer in time."""


class Conn:
    """A client connection for tests: raw bytes in, reply lines out.

    A thin layer over :class:`qga.host.client.AgentClient`'s raw framing that
    speaks the tests' terms: a missing reply is an assertion failure
    (:class:`AgentTimeout`), a closed connection a ``ConnectionError``.
    """

    def __init__(self, path: Any, timeout: float = 10.0, family: int = socket.AF_UNIX) -> None:
        self.client = client.AgentClient(path, timeout, family)
        self.client.open()  # FileNotFoundError etc. as they are: callers retry on them
        self.sock = self.client.sock
        self.timeout = timeout

    @property
    def buf(self) -> bytes:
        """Received bytes not read yet."""
        return self.client.buffered

    def take_buffer(self) -> bytes:
        """Received bytes not read yet, consumed (for tests that read the socket themselves)."""
        return self.client.take_buffered()

    @contextlib.contextmanager
    def _test_errors(self) -> Iterator[None]:
        try:
            yield
        except client.AgentTimeout:
            raise AgentTimeout(f"no reply within {self.timeout} s (buffer {self.buf[:200]!r})") from None
        except client.AgentDisconnected as exc:
            raise ConnectionError(str(exc)) from None

    def close(self) -> None:
        """Disconnect."""
        self.client.close()

    def send(self, data: bytes) -> None:
        """Write raw bytes."""
        with self._test_errors():
            self.client.send_raw(data)

    def read_line(self, timeout: Optional[float] = None) -> bytes:
        """One reply line including the trailing newline (and a leading 0xFF if any)."""
        with self._test_errors():
            return bytes(self.client.next_line(time.monotonic() + (timeout or self.timeout)))

    def read_reply(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """The next reply, decoded (a leading 0xFF is stripped)."""
        return json.loads(self.read_line(timeout).lstrip(b"\xff"))

    def expect_silence(self, seconds: float = 0.3) -> None:
        """Assert nothing arrives for ``seconds``."""
        try:
            self.client.receive(time.monotonic() + seconds)
        except client.AgentTimeout:
            return
        except client.AgentDisconnected:
            raise AssertionError("unexpected end of the connection") from None
        raise AssertionError(f"unexpected data: {self.buf!r}")

    def request(self, request: Any, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Send one request (dict or raw bytes) and return the decoded reply."""
        self.send(request if isinstance(request, bytes) else json.dumps(request).encode() + b"\n")
        return self.read_reply(timeout)

    def cmd(self, name: str, timeout: Optional[float] = None, **arguments: Any) -> Any:
        """Execute a command and return its ``return`` value (AssertionError on error)."""
        req: Dict[str, Any] = {"execute": name}
        if arguments:
            req["arguments"] = {k.replace("_", "-"): v for k, v in arguments.items()}
        reply = self.request(req, timeout)
        if "error" in reply:
            raise AssertionError(f"{name} failed: {reply['error']}")
        return reply["return"]

    def sync(self, sync_id: int = 4242) -> bytes:
        """0xFF + guest-sync-delimited: skip anything stale, as QEMU's tests do.

        Returns the bytes skipped before the matching sync reply (stale replies,
        error cascades, earlier sync replies), so tests can compare them.
        """
        with self._test_errors():
            return self.client.sync_skipping(sync_id)


class AgentProcess:
    """A running agent on ``<tmp>/sock`` with state in ``<tmp>``."""

    def __init__(self, argv: Sequence[str], tmpdir: str, env: Optional[Dict[str, str]] = None,
                 **popen_kwargs: Any) -> None:
        self.tmpdir = tmpdir
        self.sock_path = os.path.join(tmpdir, "sock")
        self.log_path = os.path.join(tmpdir, "agent.log")
        self.argv = list(argv)
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.pop("NOTIFY_SOCKET", None)
        full_env.pop("JOURNAL_STREAM", None)
        full_env.update(env or {})
        #: Our agent must stop on SIGTERM (test-qga.c asserts exit 0); start()
        #: relaxes this for the reference binary.
        self.strict_stop = True
        self._log = open(self.log_path, "ab")
        self._conns: List[Conn] = []
        try:
            self.proc = subprocess.Popen(self.argv, cwd=tmpdir, env=full_env, stdin=subprocess.DEVNULL,
                                         stdout=self._log, stderr=subprocess.STDOUT, **popen_kwargs)
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        """The agent's pid."""
        return self.proc.pid

    def log(self) -> str:
        """What the agent wrote on stdout/stderr so far."""
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def connect(self, timeout: float = 10.0) -> Conn:
        """A new client connection (retries until the socket accepts)."""
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}: {self.log()}")
            try:
                conn = Conn(self.sock_path, timeout)
                self._conns.append(conn)
                return conn
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"agent socket never appeared: {self.log()}") from None
                time.sleep(0.01)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the agent and wait for it; returns its exit status."""
        for conn in self._conns:
            conn.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                if self.strict_stop:
                    raise AssertionError(f"agent did not stop on signal {sig}: {self.log()}") from None
                # The reference qemu-ga's own shutdown is not what we test; it
                # has been seen (rarely, only inside the full suite) to ignore
                # SIGTERM for more than 10 s.
                print(f"warning: reference agent {self.pid} ignored signal {sig} for {timeout:g} s; killed",
                      file=sys.stderr)
        self._log.close()
        return self.proc.returncode


def ours_argv(tmpdir: str, extra: Iterable[str] = ()) -> List[str]:
    """Command line of qemu-ga-py on ``<tmpdir>/sock``."""
    return [sys.executable, "-m", "qga", "-m", "unix-listen", "-p", os.path.join(tmpdir, "sock"),
            "-t", tmpdir, *extra]


def reference_argv(tmpdir: str, extra: Iterable[str] = ()) -> List[str]:
    """Command line of the system qemu-ga (Debian 7.2) on ``<tmpdir>/sock``."""
    if not os.access(REFERENCE_QGA, os.X_OK):
        raise AssertionError(f"{REFERENCE_QGA} is missing: install the qemu-guest-agent package "
                             "(.ci/run does)")
    return [REFERENCE_QGA, "-m", "unix-listen", "-p", os.path.join(tmpdir, "sock"), "-t", tmpdir, *extra]


def start(kind: str = "ours", extra: Iterable[str] = (), env: Optional[Dict[str, str]] = None,
          tmpdir: Optional[str] = None) -> AgentProcess:
    """Start ``ours`` or ``reference`` in a fresh (or given) temporary directory."""
    tmpdir = tmpdir or tempfile.mkdtemp(prefix=f"qga-{kind}-")
    argv = ours_argv(tmpdir, extra) if kind == "ours" else reference_argv(tmpdir, extra)
    proc = AgentProcess(argv, tmpdir, env)
    proc.strict_stop = kind == "ours"
    return proc
