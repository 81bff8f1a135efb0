"""Running helper programs (shutdown, hwclock, chpasswd, suspend tools).

Two runners, because qemu-ga 10.2 has two:

* :func:`run_helper` is qemu-ga's generic helper runner: the child gets its
  own session (``setsid``), stdin is a pipe carrying ``input`` (or
  /dev/null), and stdout and stderr are merged into one captured pipe whose
  text ends up in the error message.  Used by guest-shutdown, guest-set-time
  (hwclock), guest-set-user-password (chpasswd) and the fsfreeze hook.
* :func:`spawn_status` is the suspend code's runner (glib ``g_spawn_sync``
  with output discarded): it returns the exit status, or -1 when the program
  is not found in ``PATH``.

Both are plain blocking calls: handlers run in the worker thread.
"""
from __future__ import annotations

import os
import signal
import stat
from typing import Mapping, Optional, Sequence

from qga.errors import InternalError


class HelperFailed(InternalError):
    """A helper program that did not succeed, with the facts qemu-ga words.

    ``how`` is ``"exec"`` (``program`` could not be started: ``cause``),
    ``"spawn"`` (:func:`spawn_status` could not start it: ``cause``),
    ``"timeout"`` (killed after ``timeout`` seconds), ``"signal"`` (killed by
    one) or ``"status"`` (non-zero ``status``); ``action`` is what it was run
    for and ``output`` its captured stdout and stderr.
    """

    def __init__(self, how: str, program: str, action: str = "", *, output: str = "",
                 status: int = 0, timeout: Optional[float] = None,
                 cause: Optional[OSError] = None) -> None:
        detail = {"exec": f"cannot exec: {cause}", "spawn": f"cannot spawn: {cause}",
                  "timeout": f"timed out after {timeout} s", "signal": "killed by a signal",
                  "status": f"exit status {status}"}[how]
        super().__init__(f"{program}: {detail}" + (f": {output.strip()}" if output.strip() else ""))
        self.how = how
        self.program = program
        self.action = action
        self.output = output
        self.status = status
        self.timeout = timeout
        self.cause = cause


def _kill_session(sid: int) -> None:
    """SIGKILL every process of the session ``sid`` leads.

    Its process group is not enough: a child may have made its own (timeout(1),
    which the stock fsfreeze hook runs its scripts under, does).
    """
    os.killpg(sid, signal.SIGKILL)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    os.kill(int(entry), signal.SIGKILL)
            except OSError:  # exited meanwhile
                pass


def run_helper(argv: Sequence[str], action: str, input: Optional[bytes] = None,  # noqa: A002
               *, env: Optional[Mapping[str, str]] = None,
               timeout: Optional[float] = None) -> None:
    """Run ``argv`` to completion; raise :class:`HelperFailed` unless it exits 0.

    ``action`` (what the helper is run for) completes qemu-ga's texts.
    ``argv[0]`` without a slash is looked up in ``PATH`` (of ``env`` if given).
    ``timeout`` (seconds) kills a hung helper's whole session (an extension:
    qemu-ga waits forever).  The API is shared with the fsfreeze-hook runner: keep it.
    """
    import subprocess  # deferred: helpers are rare and the import costs start-up time

    try:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            close_fds=True, env=dict(env) if env is not None else None)
    except OSError as exc:
        raise HelperFailed("exec", argv[0], action, cause=exc) from None
    try:
        out, _ = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(proc.pid)
        proc.communicate()
        raise HelperFailed("timeout", argv[0], action, timeout=timeout) from None
    text = out.decode("utf-8", "replace") if out else ""
    status = proc.returncode
    if status < 0:
        raise HelperFailed("signal", argv[0], action, output=text, status=status)
    if status != 0:
        raise HelperFailed("status", argv[0], action, output=text, status=status)


def unsafe_to_run(path: str) -> Optional[str]:
    """Why the program ``path`` must not be run by the agent, or None.

    Whoever can change it runs code as root when the agent runs it (the
    fsfreeze hook): it must belong to root (or to the agent's own user) and
    not be writable by group or others.  None also when it cannot be
    stat-ed: the exec then fails and reports that as qemu-ga does.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & 0o022:
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def helper_timeout(config: object) -> Optional[float]:
    """The agent's per-command deadline (``command_timeout``), used as the
    helper timeout so a hung helper is killed when the host gets its error."""
    value = getattr(config, "command_timeout", None)
    return float(value) if value else None


def spawn_status(argv: Sequence[str], *, env: Optional[Mapping[str, str]] = None) -> int:
    """Exit status of ``argv`` (output discarded), -1 if the program is not found.

    Other spawn failures raise :class:`HelperFailed` (``spawn``).  A child killed by a signal counts as status
    128+signal (glib's WEXITSTATUS would report 0, i.e. success).
    """
    try:
        import subprocess

        proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, close_fds=True,
                              env=dict(env) if env is not None else None)
    except FileNotFoundError:
        return -1
    except OSError as exc:
        raise HelperFailed("spawn", argv[0], cause=exc) from None
    status = proc.returncode
    return 128 - status if status < 0 else status
