"""guest-exec and guest-exec-status (spec 2.14), plus a timeout and a kill.

The handler (worker thread) only spawns the child; everything afterwards
happens on the event loop: the child's non-blocking pipes are read there
(never a blocking read), ``input-data`` is written there, and the child is
reaped there on SIGCHLD, so there are never zombies.  A record reports
``exited: true`` once the child is reaped *and* its captured pipes reached
EOF, and is deleted when that status has been returned.

Beyond qemu-ga (named with an ``x-`` prefix so stock clients are unaffected):

* ``guest-exec`` accepts ``x-timeout`` (number, seconds): when exceeded the
  child's whole process group is killed with SIGKILL; the status then
  reports ``signal: 9``.
* ``x-guest-exec-kill {pid, *signal}`` sends ``signal`` (default 9, SIGKILL)
  to the process group of a guest-exec child; returns ``{}``.
* Children run in their own session / process group.
* ``max-concurrent-execs`` caps unfinished children and
  ``max-exec-records`` caps finished-but-unqueried records (the oldest
  finished record is dropped, with a warning), each with a clear error.
* An unknown pid gives ``PID 1234 does not exist`` (qemu-ga 10.2 sends the
  literal text ``PID ld does not exist``, a format-string bug).
"""
from __future__ import annotations

import errno
import os
import signal as _signal
import threading
import time
from typing import Any, Dict, List, Optional, Union

from qga.context import Context
from qga.cstring import os_text
from qga.errors import QgaError
from qga import qbase64
from qga.linux.spawn import SpawnError, env_mapping, find_program, spawn
from qga.codec import base64_text
from qga.command import command
from qga.schema import Alternate, Enum
from qga.log import get_logger

log = get_logger(__name__)

#: Captured bytes kept per stream (qemu-ga's GUEST_EXEC_MAX_OUTPUT).
MAX_OUTPUT = 16 * 1024 * 1024
_READ_CHUNK = 65536
#: Reads per wake-up and stream, so one chatty child cannot starve the loop.
_READS_PER_WAKEUP = 16

GuestExecCaptureOutput = Alternate("GuestExecCaptureOutput", [
    "bool", Enum("GuestExecCaptureOutputMode", "none", "stdout", "stderr", "separated", "merged")])


class Stream:
    """One captured output stream."""

    __slots__ = ("fd", "data", "truncated")

    def __init__(self, fd: Optional[int]) -> None:
        self.fd = fd
        self.data = bytearray()
        self.truncated = False


class ExecRecord:
    """A guest-exec child, from spawn until its exited status is returned."""

    def __init__(self, pid: int, argv: List[str], out: Optional[Stream], err: Optional[Stream],
                 stdin_fd: Optional[int], stdin_data: bytes) -> None:
        self.pid = pid
        self.argv = argv
        self.out = out
        self.err = err
        self.stdin_fd = stdin_fd
        self.stdin_data = memoryview(stdin_data)
        self.status: Optional[int] = None
        self.finished_at = 0.0
        self.timer: Any = None

    @property
    def done(self) -> bool:
        """Reaped and every captured pipe at EOF."""
        return (self.status is not None and (self.out is None or self.out.fd is None)
                and (self.err is None or self.err.fd is None))


class ExecTable:
    """All records by pid; the lock guards membership and completion state."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: Dict[int, ExecRecord] = {}


def _table(ctx: Context) -> ExecTable:
    return ctx.subject(ExecTable)


def _capture_mode(value: Union[None, bool, str]) -> str:
    if value is None or value is False:
        return "none"
    if value is True:
        return "separated"
    return value


# -- event-loop side ------------------------------------------------------------
def _start_io(ctx: Context, rec: ExecRecord, timeout: Optional[float]) -> None:
    """Loop thread: watch the pipes, feed stdin, arm the timeout."""
    loop = ctx.loop
    for stream in (rec.out, rec.err):
        if stream is not None and stream.fd is not None:
            loop.add_reader(stream.fd, lambda s=stream: _on_readable(ctx, rec, s))
    if rec.stdin_fd is not None:
        loop.add_writer(rec.stdin_fd, lambda: _on_writable(ctx, rec))
    if timeout is not None and not rec.done:
        rec.timer = loop.call_later(timeout, _on_timeout, ctx, rec, timeout)


def _on_readable(ctx: Context, rec: ExecRecord, stream: Stream) -> None:
    fd = stream.fd
    if fd is None:
        return
    for _ in range(_READS_PER_WAKEUP):
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("guest-exec pid %d: cannot read from stdout/stderr pipe: %s",
                        rec.pid, exc.strerror)
            chunk = b""
        if not chunk:
            ctx.loop.remove_reader(fd)
            os.close(fd)
            with _table(ctx).lock:
                stream.fd = None
            _maybe_finished(ctx, rec)
            return
        room = MAX_OUTPUT - len(stream.data)
        if len(chunk) > room:
            stream.truncated = True  # keep reading (and dropping) until EOF
            chunk = chunk[:room]
        if chunk:
            stream.data += chunk


def _close_stdin(ctx: Context, rec: ExecRecord) -> None:
    if rec.stdin_fd is not None:
        ctx.loop.remove_writer(rec.stdin_fd)
        os.close(rec.stdin_fd)
        rec.stdin_fd = None
        rec.stdin_data = memoryview(b"")


def _on_writable(ctx: Context, rec: ExecRecord) -> None:
    if rec.stdin_fd is None:
        return
    try:
        n = os.write(rec.stdin_fd, rec.stdin_data[:_READ_CHUNK])
    except BlockingIOError:
        return
    except OSError as exc:  # EPIPE: the child does not read its input
        if exc.errno != errno.EPIPE:
            log.warning("guest-exec pid %d: cannot write to stdin pipe: %s", rec.pid, exc.strerror)
        _close_stdin(ctx, rec)
        return
    rec.stdin_data = rec.stdin_data[n:]
    if not rec.stdin_data:
        _close_stdin(ctx, rec)


def _on_exit(ctx: Context, rec: ExecRecord, status: int) -> None:
    """Loop thread, from the SIGCHLD reaper."""
    with _table(ctx).lock:
        rec.status = status
    _close_stdin(ctx, rec)  # nobody is left to read it
    _maybe_finished(ctx, rec)


def _maybe_finished(ctx: Context, rec: ExecRecord) -> None:
    if not rec.done:
        return
    if rec.timer is not None:
        rec.timer.cancel()
        rec.timer = None
    rec.finished_at = time.monotonic()
    _evict(ctx)


def _evict(ctx: Context) -> None:
    """Bound the finished-but-unqueried records: drop the oldest finished."""
    limit = ctx.config.max_exec_records
    if limit <= 0:
        return
    table = _table(ctx)
    with table.lock:
        finished = [r for r in table.records.values() if r.done]
        excess = len(finished) - limit
        if excess <= 0:
            return
        finished.sort(key=lambda r: r.finished_at)
        for rec in finished[:excess]:
            del table.records[rec.pid]
    log.warning("guest-exec: %d finished record(s) never queried were dropped "
                "(max-exec-records is %d)", excess, limit)


def _on_timeout(ctx: Context, rec: ExecRecord, timeout: float) -> None:
    rec.timer = None
    if rec.done:
        return
    log.warning("guest-exec pid %d exceeded x-timeout (%g s): killing its process group",
                rec.pid, timeout)
    ctx.audit("guest-exec x-timeout", pid=rec.pid, timeout=timeout)
    _kill(rec, _signal.SIGKILL)


def _kill(rec: ExecRecord, signum: int) -> None:
    try:
        os.killpg(rec.pid, signum)  # the child leads its own session/group
    except ProcessLookupError:
        if rec.status is None:  # it left its group: at least the child itself
            os.kill(rec.pid, signum)


# -- commands -----------------------------------------------------------------------
@command("guest-exec", order=32, group="unrestricted", audit=("path", "arg", "capture-output", "x-timeout"),
         args={"path": "str", "*arg": ["str"], "*env": ["str"], "*input-data": "str",
               "*capture-output": GuestExecCaptureOutput, "*x-timeout": "number"})
def guest_exec(ctx: Context, path: str, arg: Optional[List[str]] = None,
               env: Optional[List[str]] = None, input_data: Optional[str] = None,
               capture_output: Union[None, bool, str] = None,
               x_timeout: Optional[float] = None) -> Dict[str, int]:
    """Start ``path`` with ``arg``; returns ``{"pid"}`` at once."""
    path = os_text(path)
    argv = [path] + [os_text(a) for a in (arg or [])]
    log.info('guest-exec called: "%s"', " ".join(argv))
    stdin_data = qbase64.decode(input_data) if input_data is not None else b""
    if x_timeout is not None and not x_timeout > 0:
        raise QgaError("x-timeout must be a positive number of seconds")
    mode = _capture_mode(capture_output)
    table = _table(ctx)
    limit = ctx.config.max_concurrent_execs
    if limit:
        with table.lock:
            running = sum(1 for r in table.records.values() if not r.done)
        if running >= limit:
            raise QgaError(f"too many guest-exec processes still running "
                           f"(max-concurrent-execs is {limit})")
    environ = env_mapping([os_text(e) for e in env]) if env is not None else dict(os.environ)
    try:
        program = find_program(path, environ.get("PATH"))
        child = spawn(program, argv, environ, stdin_pipe=input_data is not None,
                      capture_stdout=mode in ("stdout", "separated", "merged"),
                      capture_stderr=mode in ("stderr", "separated"), merge=mode == "merged")
    except SpawnError as exc:
        ctx.audit("guest-exec", argv=argv, error=exc.strerror)
        raise QgaError(f"Failed to execute child process \u201c{path}\u201d ({exc.strerror})") from None
    out = Stream(child.stdout) if child.stdout is not None else None
    err = Stream(child.stderr) if child.stderr is not None else None
    rec = ExecRecord(child.pid, argv, out, err, child.stdin, stdin_data)
    with table.lock:
        table.records[child.pid] = rec
    ctx.loop.add_child_handler(child.pid, lambda _pid, status: _on_exit(ctx, rec, status))
    ctx.loop.call_soon_threadsafe(_start_io, ctx, rec, x_timeout)
    ctx.audit("guest-exec", argv=argv, pid=child.pid, capture=mode)
    return {"pid": child.pid}


def _encode(stream: Optional[Stream], result: Dict[str, Any], name: str) -> None:
    if stream is not None and stream.data:
        result[f"{name}-data"] = base64_text(stream.data)
        result[f"{name}-truncated"] = stream.truncated


@command("guest-exec-status", order=31, group="unrestricted", args={"pid": "int"}, inline=True)
def guest_exec_status(ctx: Context, pid: int) -> Dict[str, Any]:
    """``{"exited": false}`` while running; the full status once, then forgotten."""
    log.debug("guest-exec-status called, pid: %d", pid)
    table = _table(ctx)
    with table.lock:
        rec = table.records.get(pid)
        if rec is None:
            raise QgaError(f"PID {pid} does not exist")
        if not rec.done:
            return {"exited": False}
        del table.records[pid]
    assert rec.status is not None
    result: Dict[str, Any] = {"exited": True}
    if os.WIFEXITED(rec.status):
        result["exitcode"] = os.WEXITSTATUS(rec.status)
    elif os.WIFSIGNALED(rec.status):
        result["signal"] = os.WTERMSIG(rec.status)
    _encode(rec.out, result, "out")
    _encode(rec.err, result, "err")
    return result


@command("x-guest-exec-kill", group="unrestricted", audit=("pid", "signal"),
         args={"pid": "int", "*signal": "int"})
def guest_exec_kill(ctx: Context, pid: int, signal: int = 9) -> None:
    """Extension: send ``signal`` (default SIGKILL) to a guest-exec child's process group."""
    table = _table(ctx)
    with table.lock:
        rec = table.records.get(pid)
    if rec is None:
        raise QgaError(f"PID {pid} does not exist")
    ctx.audit("x-guest-exec-kill", pid=pid, signal=signal)
    if rec.done:
        return  # already over: nothing left to signal
    try:
        _kill(rec, signal)
    except (OSError, ValueError, OverflowError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "Invalid argument"
        raise QgaError(f"failed to send signal {signal} to PID {pid}: {reason}") from None
