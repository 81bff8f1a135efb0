"""guest-exec / guest-exec-status with a real event loop reaping on SIGCHLD."""
from __future__ import annotations

import base64
import os
import signal
import threading
import time
from typing import Any, Dict, Iterator

import pytest

from qga.commands import guest_exec as gx
from qga.config import Config
from qga.context import Context
from qga.errors import QgaError
from qga.loop import Loop
from qga.registry import Registry
from qga.state import StateDir
from tests.hardening.util import wait_reaped


@pytest.fixture
def ctx(tmp_path) -> Iterator[Context]:
    """A Context whose loop runs in a thread; SIGCHLD routed as the agent does."""
    state = StateDir(str(tmp_path))
    loop = Loop()
    loop.add_signal_handler(signal.SIGCHLD, lambda _: loop.reap_children())  # main thread
    c = Context(Config(), state, loop, Registry([]))
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    yield c
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    loop.close()


def wait_status(ctx: Context, pid: int, timeout: float = 60.0) -> Dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = gx.guest_exec_status(ctx, pid)
        if status["exited"]:
            return status
        time.sleep(0.005)
    raise AssertionError(f"pid {pid} did not finish")


def drain_loop(ctx: Context) -> None:
    """Wait until the loop has run every callback queued before this call."""
    drained = threading.Event()
    ctx.loop.call_soon_threadsafe(drained.set)
    assert drained.wait(60), "the loop is stuck"


def run(ctx: Context, *argv: str, **kwargs: Any) -> Dict[str, Any]:
    pid = gx.guest_exec(ctx, argv[0], arg=list(argv[1:]), **kwargs)["pid"]
    return wait_status(ctx, pid)


def dec(text: str) -> bytes:
    return base64.b64decode(text)


def zombies_of(pid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            count += 1
    return count


SCRIPT = "echo stdout; echo stderr >&2; echo stdout; echo stderr >&2"


def test_qemu_echo_case(ctx: Context) -> None:
    status = run(ctx, "echo", "-n", '" test_str "', capture_output=True)
    # Handlers hand base64 text to the writer as bytes.
    assert status == {"exited": True, "exitcode": 0, "out-data": base64.b64encode(b'" test_str "'),
                      "out-truncated": False}


def test_exit_code_and_no_capture(ctx: Context) -> None:
    assert run(ctx, "sh", "-c", "echo hidden; exit 7") == {"exited": True, "exitcode": 7}


def test_signal(ctx: Context) -> None:
    assert run(ctx, "sh", "-c", "kill -9 $$") == {"exited": True, "signal": 9}


def test_capture_modes(ctx: Context) -> None:
    sep = run(ctx, "sh", "-c", SCRIPT, capture_output="separated")
    assert dec(sep["out-data"]) == b"stdout\nstdout\n" and dec(sep["err-data"]) == b"stderr\nstderr\n"
    merged = run(ctx, "sh", "-c", SCRIPT, capture_output="merged")
    assert dec(merged["out-data"]) == b"stdout\nstderr\nstdout\nstderr\n" and "err-data" not in merged
    out = run(ctx, "sh", "-c", SCRIPT, capture_output="stdout")
    assert dec(out["out-data"]) == b"stdout\nstdout\n" and "err-data" not in out
    err = run(ctx, "sh", "-c", SCRIPT, capture_output="stderr")
    assert dec(err["err-data"]) == b"stderr\nstderr\n" and "out-data" not in err
    for none in ("none", False):
        assert run(ctx, "sh", "-c", SCRIPT, capture_output=none) == {"exited": True, "exitcode": 0}


#: capture-output -> what the child's fds 0, 1, 2 are (spec table; "pipe" = captured).
CHILD_FDS = {"none": ("/dev/null", "/dev/null", "/dev/null"), "separated": ("/dev/null", "pipe", "pipe"),
             "stdout": ("/dev/null", "pipe", "/dev/null"), "stderr": ("/dev/null", "/dev/null", "pipe"),
             "merged": ("/dev/null", "pipe", "pipe")}


def test_child_fds_per_capture_mode(ctx: Context, tmp_path) -> None:
    """The child's stdin is /dev/null, its stdout/stderr follow the table; the agent's fds are untouched.

    Upstream's stdout-/stderr-only modes close the agent's own fd 0, after
    which later children inherit whatever reuses it.  The agent's stdin is a
    pipe here (not /dev/null as under pytest) so an inherited stdin shows.
    """
    saved_stdin = os.dup(0)
    read_end, write_end = os.pipe()
    os.dup2(read_end, 0)
    os.close(read_end)
    try:
        agent_fds = [os.fstat(fd) for fd in (0, 1, 2)]
        report = tmp_path / "fds"
        # sh's own fds, read from command substitutions (a redirection would change them first).
        script = ('a=$(readlink /proc/$$/fd/0); b=$(readlink /proc/$$/fd/1); c=$(readlink /proc/$$/fd/2); '
                  f'echo "$a $b $c" > {report}')
        for _round in range(2):  # a second round sees any damage the first did
            for mode, expected in CHILD_FDS.items():
                assert run(ctx, "sh", "-c", script, capture_output=mode)["exitcode"] == 0
                links = report.read_text().split()
                assert tuple("pipe" if link.startswith("pipe:") else link for link in links) == expected, mode
                if mode == "merged":
                    assert links[1] == links[2]
                elif mode == "separated":
                    assert links[1] != links[2]
        assert [(st.st_dev, st.st_ino) for st in (os.fstat(fd) for fd in (0, 1, 2))] == \
               [(st.st_dev, st.st_ino) for st in agent_fds]
    finally:
        os.dup2(saved_stdin, 0)
        os.close(saved_stdin)
        os.close(write_end)


def test_input_data(ctx: Context) -> None:
    data = os.urandom(300000)  # larger than a pipe buffer: written asynchronously
    status = run(ctx, "cat", input_data=base64.b64encode(data).decode(), capture_output=True)
    assert dec(status["out-data"]) == data
    assert run(ctx, "sh", "-c", "exit 0", input_data="aGVsbG8=") == {"exited": True, "exitcode": 0}
    assert run(ctx, "sh", "-c", "test -t 0 || read x || exit 5") == {"exited": True, "exitcode": 5}


def test_bad_input_data_before_spawn(ctx: Context) -> None:
    with pytest.raises(QgaError, match="^Base64 data contains invalid characters$"):
        gx.guest_exec(ctx, "true", input_data="not base64!")


def test_env_replaces_environment_and_path(ctx: Context, tmp_path) -> None:
    status = run(ctx, "/usr/bin/env", env=["A=1", "B=two"], capture_output=True)
    assert dec(status["out-data"]) == b"A=1\nB=two\n"
    prog = tmp_path / "myprog"
    prog.write_text("#!/bin/sh\necho found\n")
    prog.chmod(0o755)
    status = run(ctx, "myprog", env=[f"PATH={tmp_path}"], capture_output=True)
    assert dec(status["out-data"]) == b"found\n"


def test_spawn_errors(ctx: Context, tmp_path) -> None:
    with pytest.raises(QgaError) as info:
        gx.guest_exec(ctx, "/bin/invalid-cmd42")
    assert info.value.desc == \
        "Failed to execute child process \u201c/bin/invalid-cmd42\u201d (No such file or directory)"
    plain = tmp_path / "plain"
    plain.write_text("x")
    with pytest.raises(QgaError, match=r"\(Permission denied\)$"):
        gx.guest_exec(ctx, str(plain))
    with pytest.raises(QgaError, match=r"^Failed to execute child process \u201cnosuchprog42\u201d"):
        gx.guest_exec(ctx, "nosuchprog42")


def test_record_deleted_after_exited(ctx: Context) -> None:
    pid = gx.guest_exec(ctx, "true")["pid"]
    wait_status(ctx, pid)
    with pytest.raises(QgaError, match=f"^PID {pid} does not exist$"):
        gx.guest_exec_status(ctx, pid)
    with pytest.raises(QgaError, match="^PID 0 does not exist$"):
        gx.guest_exec_status(ctx, 0)


def test_exited_waits_for_pipe_eof(ctx: Context, tmp_path) -> None:
    """A background grandchild holding the pipe keeps exited:false after the child is reaped."""
    pidfile = tmp_path / "grandchild"
    pid = gx.guest_exec(ctx, "sh", arg=["-c", f"sleep 600 & echo $! > {pidfile}; echo started"],
                        capture_output=True)["pid"]
    wait_reaped(pid)
    drain_loop(ctx)  # the reaper's bookkeeping for this child is done
    assert gx.guest_exec_status(ctx, pid) == {"exited": False}
    os.kill(int(pidfile.read_text()), signal.SIGKILL)  # the pipe's last writer goes
    status = wait_status(ctx, pid)
    assert dec(status["out-data"]) == b"started\n"


def test_own_session_and_sigpipe_default(ctx: Context) -> None:
    pid = gx.guest_exec(ctx, "cat", arg=["/proc/self/stat", "/proc/self/status"],
                        capture_output=True)["pid"]
    text = dec(wait_status(ctx, pid)["out-data"]).decode()
    fields = text.split("\n", 1)[0].rsplit(")", 1)[1].split()
    assert int(fields[2]) == pid and int(fields[3]) == pid  # pgid and sid: its own session
    ignored = int(next(line.split()[1] for line in text.splitlines() if line.startswith("SigIgn:")), 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1)), "SIGPIPE must be default in the child"
    assert not ignored & (1 << (signal.SIGXFSZ - 1))


def test_truncation_at_16_mib(ctx: Context) -> None:
    size = 16 * 1024 * 1024 + 1
    status = run(ctx, "head", "-c", str(size), "/dev/zero", capture_output=True)
    assert len(dec(status["out-data"])) == 16 * 1024 * 1024
    assert status["out-truncated"] is True
    status = run(ctx, "head", "-c", str(size - 1), "/dev/zero", capture_output="stderr")
    assert "out-data" not in status  # not captured, so not reported


def test_x_timeout_kills_process_group(ctx: Context) -> None:
    # Both sleeps outlive wait_status's deadline by far: only the group kill ends them
    # (the background one holds the pipe, so exited:true needs it dead too).
    status = run(ctx, "sh", "-c", "sleep 600 & sleep 600", capture_output=True, x_timeout=0.3)
    assert status == {"exited": True, "signal": 9}
    with pytest.raises(QgaError, match="x-timeout"):
        gx.guest_exec(ctx, "true", x_timeout=0)


def test_x_guest_exec_kill(ctx: Context) -> None:
    pid = gx.guest_exec(ctx, "sleep", arg=["30"])["pid"]
    gx.guest_exec_kill(ctx, pid, 15)
    assert wait_status(ctx, pid) == {"exited": True, "signal": 15}
    with pytest.raises(QgaError, match=f"^PID {pid} does not exist$"):
        gx.guest_exec_kill(ctx, pid)
    pid = gx.guest_exec(ctx, "sleep", arg=["30"])["pid"]
    gx.guest_exec_kill(ctx, pid)
    assert wait_status(ctx, pid) == {"exited": True, "signal": 9}


def test_concurrency_cap(ctx: Context) -> None:
    ctx.config.max_concurrent_execs = 2
    pids = [gx.guest_exec(ctx, "sleep", arg=["30"])["pid"] for _ in range(2)]
    with pytest.raises(QgaError, match="max-concurrent-execs is 2"):
        gx.guest_exec(ctx, "true")
    for pid in pids:
        gx.guest_exec_kill(ctx, pid)
        wait_status(ctx, pid)
    wait_status(ctx, gx.guest_exec(ctx, "true")["pid"])


def test_finished_records_are_bounded(ctx: Context) -> None:
    ctx.config.max_exec_records = 3
    pids = []
    for _ in range(6):
        pid = gx.guest_exec(ctx, "true")["pid"]
        pids.append(pid)
        wait_reaped(pid)
        drain_loop(ctx)  # finished (and evictions done) before the next one starts
    assert sorted(gx._table(ctx).records) == sorted(pids[3:])  # the oldest were dropped
    for pid in pids[:3]:
        with pytest.raises(QgaError):
            gx.guest_exec_status(ctx, pid)


def test_thousand_execs_leave_no_zombies(ctx: Context) -> None:
    pids = [gx.guest_exec(ctx, "true")["pid"] for _ in range(1000)]
    for pid in pids:
        wait_reaped(pid)
    drain_loop(ctx)
    assert all(gx._table(ctx).records[p].done for p in pids)
    assert zombies_of(os.getpid()) == 0
    for pid in pids:
        assert wait_status(ctx, pid)["exitcode"] == 0
    assert not gx._table(ctx).records
