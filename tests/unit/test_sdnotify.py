"""qga.sdnotify against real bound AF_UNIX datagram sockets."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from qga import sdnotify
from tests.prereq import require

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd's notify socket."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


@pytest.fixture
def abstract_receiver() -> Iterator[Tuple[socket.socket, str]]:
    """A datagram socket in the abstract namespace ('@name' in NOTIFY_SOCKET)."""
    name = "qga-test-" + uuid.uuid4().hex
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    yield sock, "@" + name
    sock.close()


@pytest.fixture
def fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the pure-Python sender, whether or not systemd-python is installed."""
    monkeypatch.setattr(sdnotify, "_systemd_notify", None)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(var, raising=False)


def test_no_socket_returns_false(fallback: None) -> None:
    assert sdnotify.notify("READY=1") is False


def test_fallback_delivers_to_path(receiver: Tuple[socket.socket, str], fallback: None,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    sock, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.notify("READY=1\nSTATUS=waiting for host") is True
    assert sock.recv(4096) == b"READY=1\nSTATUS=waiting for host"


def test_fallback_delivers_to_abstract(abstract_receiver: Tuple[socket.socket, str], fallback: None,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    sock, name = abstract_receiver
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    assert sdnotify.notify("WATCHDOG=1") is True
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_helpers_message_format(receiver: Tuple[socket.socket, str], fallback: None,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    sock, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.ready("channel open")
    assert sdnotify.status("frozen\nsince now")
    assert sdnotify.watchdog_ping()
    assert sdnotify.stopping()
    got = [sock.recv(4096) for _ in range(4)]
    assert got == [b"READY=1\nSTATUS=channel open", b"STATUS=frozen since now",
                   b"WATCHDOG=1", b"STOPPING=1"]


def test_utf8_payload(receiver: Tuple[socket.socket, str], fallback: None,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    sock, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.status("gefroren \u2744")
    assert sock.recv(4096) == "STATUS=gefroren \u2744".encode()


def test_missing_listener_returns_false(tmp_path: Path, fallback: None,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-here"))
    assert sdnotify.notify("READY=1") is False


@pytest.mark.parametrize("value", ["relative/path", "@", "vsock:2:1234"])
def test_unsupported_address_returns_false(value: str, fallback: None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert sdnotify.notify("READY=1") is False


def test_systemd_backend_is_used_when_present(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: List[str] = []

    def fake_notify(msg: str) -> bool:
        calls.append(msg)
        return True

    monkeypatch.setattr(sdnotify, "_systemd_notify", fake_notify)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "x"))
    assert sdnotify.notify("READY=1") is True
    assert calls == ["READY=1"]


def test_systemd_backend_error_falls_back(receiver: Tuple[socket.socket, str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(msg: str) -> bool:
        raise OSError(22, "boom")

    sock, path = receiver
    monkeypatch.setattr(sdnotify, "_systemd_notify", broken)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.notify("READY=1") is True
    assert sock.recv(4096) == b"READY=1"


def test_probe_survives_shadowing_namespace_package() -> None:
    """With the repo root first on sys.path, `systemd` may be our unit-file folder.

    Whatever is installed, probing must return a callable or None, never raise.
    """
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from qga import sdnotify\n"
        "f = sdnotify._probe_systemd()\n"
        "assert f is None or callable(f), f\n"
        "print('ok')\n" % str(REPO)
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_real_systemd_python_if_installed(receiver: Tuple[socket.socket, str]) -> None:
    """Where systemd-python imports, it is the sender: our fallback is never reached."""
    sock, path = receiver
    interpreter = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    probe = subprocess.run([interpreter, "-c", "import systemd.daemon"], cwd="/", capture_output=True, text=True)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        require(f"systemd-python is not importable by {interpreter}: {last} (CI installs python3-systemd)")
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from systemd import daemon\n"
        "from qga import sdnotify\n"
        "def fallback(*args): raise SystemExit('the pure-Python sender was used')\n"
        "sdnotify.send_datagram = fallback\n"
        "delivered = sdnotify.notify('READY=1')\n"
        "print(delivered, sdnotify._systemd_notify is daemon.notify)\n" % str(REPO)
    )
    env = dict(os.environ, NOTIFY_SOCKET=path)
    out = subprocess.run([interpreter, "-c", code], cwd="/", env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]
    assert sock.recv(4096) == b"READY=1"


def test_import_is_cheap() -> None:
    """Start-up is benchmarked: importing the module must not pull in socket/systemd."""
    code = (
        "import sys\n"
        "import qga.sdnotify\n"
        "heavy = [m for m in ('socket', 'systemd', 'systemd.daemon') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


# --- watchdog_interval ---------------------------------------------------------------

def test_watchdog_unset() -> None:
    assert sdnotify.watchdog_interval() is None


def test_watchdog_half_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert sdnotify.watchdog_interval() == 15.0


def test_watchdog_for_this_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 0.5


def test_watchdog_other_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval() is None


@pytest.mark.parametrize("value", ["0", "-5", "abc", ""])
def test_watchdog_invalid(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", value)
    assert sdnotify.watchdog_interval() is None


def test_watchdog_bad_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", "x")
    assert sdnotify.watchdog_interval() is None
