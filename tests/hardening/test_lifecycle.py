"""Signals, exit codes, pid file, daemonising and frozen-at-start mode (issue 8).

SIGKILL-while-frozen and thaw-on-SIGTERM are the freeze tests' (they need a
frozen filesystem); these cover the generic behaviours without freezing.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from qga.commands import load
from qga.registry import Registry
from tests.agentproc import REPO, ours_argv, start
from tests.hardening.util import wait_signal_delivered


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signals_exit_zero(agent_dir: str, sig: int) -> None:
    pidfile = os.path.join(agent_dir, "qga.pid")
    proc = start("ours", extra=["-f", pidfile], tmpdir=agent_dir)
    conn = proc.connect()
    conn.sync()
    assert open(pidfile, encoding="ascii").read().strip() == str(proc.pid)
    assert proc.stop(sig) == 0, proc.log()
    assert not os.path.exists(pidfile), "pid file left behind"


def test_pidfile_refuses_second_instance(agent_dir: str) -> None:
    pidfile = os.path.join(agent_dir, "qga.pid")
    first = start("ours", extra=["-f", pidfile], tmpdir=agent_dir)
    try:
        conn = first.connect()
        conn.sync()
        other = os.path.join(agent_dir, "second")
        os.mkdir(other)
        res = subprocess.run(ours_argv(other, ["-f", pidfile]), capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=30)
        assert res.returncode == 1
        assert "Cannot lock pid file" in res.stderr, res.stderr
        assert open(pidfile, encoding="ascii").read().strip() == str(first.pid)
        conn.sync()  # the first instance is unaffected
    finally:
        assert first.stop() == 0, first.log()


def test_daemonize_parent_exits_after_channel_open(agent_dir: str) -> None:
    sock = os.path.join(agent_dir, "sock")
    pidfile = os.path.join(agent_dir, "qga.pid")
    res = subprocess.run(ours_argv(agent_dir, ["-d", "-f", pidfile]), capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=30)
    assert res.returncode == 0, res.stderr
    assert os.path.exists(sock), "the parent exited before the channel was open"
    deadline = time.monotonic() + 60
    while not (os.path.exists(pidfile) and open(pidfile, encoding="ascii").read().strip()):
        assert time.monotonic() < deadline, "daemon never wrote its pid file"
        time.sleep(0.05)
    pid = int(open(pidfile, encoding="ascii").read())
    try:
        from tests.agentproc import Conn

        conn = Conn(sock)
        conn.sync()
        assert conn.cmd("guest-ping") == {}
        conn.close()
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while os.path.exists(f"/proc/{pid}"):
            assert time.monotonic() < deadline, "daemon did not stop on SIGTERM"
            time.sleep(0.05)
    assert not os.path.exists(pidfile)


@pytest.mark.parametrize("argv,message", [
    (["--no-such-option"], "unrecognized option '--no-such-option'"),
    (["-m", "carrier-pigeon", "-p", "/x"], "unsupported channel method/type: carrier-pigeon"),
    (["-m", "unix-listen"], "must specify a path for this channel"),
    (["-c", "/nonexistent/qga.conf"], "error loading configuration from path: /nonexistent/qga.conf"),
    (["-m", "unix-listen", "-p", "/s", "--command-timeout", "0"], "timeouts must be positive"),
    (["-m", "unix-listen", "-p", "/nonexistent-dir/sock", "-t", "/tmp"], "failed to create guest agent channel"),
])
def test_bad_options_and_config_exit_1(argv, message) -> None:
    res = subprocess.run([sys.executable, "-m", "qga", *argv], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO), QGA_CONF="/nonexistent"), timeout=30)
    assert res.returncode == 1
    assert message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_bad_config_value_exits_1(tmp_path) -> None:
    conf = tmp_path / "qga.conf"
    conf.write_text("[general]\nmax-file-handles=lots\n")
    res = subprocess.run([sys.executable, "-m", "qga", "-c", str(conf), "-m", "unix-listen", "-p", "/s", "-D"],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=30)
    assert res.returncode == 1 and "error loading configuration" in res.stderr, res.stderr


def test_frozen_marker_at_startup_means_frozen_mode(agent_dir: str) -> None:
    """A marker left by a previous instance: only the six freeze-safe commands work.

    The agent is stopped with SIGKILL: SIGTERM would thaw (FITHAW) this machine's filesystems.
    """
    open(os.path.join(agent_dir, "qga.state.isfrozen"), "w").close()
    proc = start("ours", extra=["--frozen-sigterm", "ignore"], tmpdir=agent_dir)
    try:
        conn = proc.connect()
        conn.sync()
        info = {c["name"]: c["enabled"] for c in conn.cmd("guest-info")["supported_commands"]}
        assert {n for n, enabled in info.items() if enabled} == Registry(load()).frozen_safe
        assert conn.cmd("guest-fsfreeze-status") == "frozen"
        reply = conn.request({"execute": "guest-get-osinfo"})
        assert reply == {"error": {"class": "CommandNotFound",
                                   "desc": "Command guest-get-osinfo has been disabled: the command is not allowed"}}
        assert "previous instance appears to have exited with frozen filesystems" in proc.log()
        proc.proc.send_signal(signal.SIGTERM)  # ignored while frozen with frozen-sigterm=ignore
        wait_signal_delivered(proc.pid, signal.SIGTERM)
        # The signal woke the loop before the first ping was sent: its handler has run
        # by the time the second is read, and a stopping agent would not answer it.
        assert conn.cmd("guest-ping") == {}
        assert conn.cmd("guest-ping") == {}
        assert proc.proc.poll() is None
    finally:
        proc.stop(signal.SIGKILL)
