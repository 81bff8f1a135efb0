"""Starting a guest-exec child: PATH lookup, pipes, ``posix_spawn``.

The child gets its own session (so a timeout or kill can reach everything it
started through the process group), default dispositions for the signals
Python ignores (SIGPIPE, SIGXFSZ), an empty signal mask, and only the
descriptors set up here: every descriptor the agent opens is close-on-exec.
``posix_spawn`` does not run Python code in the child, so it is safe from the
worker thread.  The child is *not* waited for here: the caller registers it
with the event loop, which reaps it on SIGCHLD.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from qga.errors import InternalError

#: glib's search path when PATH is unset ("." dropped: the agent runs as root).
DEFAULT_PATH = "/bin:/usr/bin"

_RESET_SIGNALS = tuple(s for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT,
                                   signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                                   signal.SIGCHLD))


class SpawnError(InternalError):
    """The child could not be started; ``errno`` says why."""

    def __init__(self, err: int) -> None:
        super().__init__(err, os.strerror(err))
        self.errno = err
        self.strerror = os.strerror(err)


@dataclass
class Child:
    """A started child and the parent's ends of its pipes (non-blocking)."""

    pid: int
    stdin: Optional[int] = None
    stdout: Optional[int] = None
    stderr: Optional[int] = None


def env_mapping(env: Sequence[str]) -> Dict[str, str]:
    """``KEY=VALUE`` strings as a mapping (an entry without ``=`` gets "")."""
    out: Dict[str, str] = {}
    for entry in env:
        key, _, value = entry.partition("=")
        if key and key not in out:  # getenv() sees the first of duplicates
            out[key] = value
    return out


def find_program(name: str, path_var: Optional[str]) -> str:
    """Resolve ``name`` as execvp does; raises SpawnError(ENOENT/EACCES)."""
    if "/" in name:
        return name
    if not name:
        raise SpawnError(2)
    denied = False
    for directory in (path_var if path_var is not None else DEFAULT_PATH).split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            denied = True
    raise SpawnError(13 if denied else 2)


def _pipe() -> List[int]:
    return list(os.pipe2(os.O_CLOEXEC))


def spawn(path: str, argv: Sequence[str], env: Mapping[str, str], *, stdin_pipe: bool,
          capture_stdout: bool, capture_stderr: bool, merge: bool) -> Child:
    """Start ``path`` with ``argv`` and exactly ``env``.

    stdin is a pipe when ``stdin_pipe``, else /dev/null; stdout/stderr are
    pipes when captured, else /dev/null; ``merge`` sends stderr into the
    stdout pipe.  Raises SpawnError.
    """
    opened: List[int] = []
    try:
        in_pipe = _pipe() if stdin_pipe else None
        out_pipe = _pipe() if capture_stdout else None
        err_pipe = _pipe() if capture_stderr and not merge else None
        for p in (in_pipe, out_pipe, err_pipe):
            if p:
                opened.extend(p)
        actions: List[Tuple[Any, ...]] = []
        if in_pipe:
            actions.append((os.POSIX_SPAWN_DUP2, in_pipe[0], 0))
        else:
            actions.append((os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0))
        if out_pipe:
            actions.append((os.POSIX_SPAWN_DUP2, out_pipe[1], 1))
        else:
            actions.append((os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0))
        if merge and out_pipe:
            actions.append((os.POSIX_SPAWN_DUP2, out_pipe[1], 2))
        elif err_pipe:
            actions.append((os.POSIX_SPAWN_DUP2, err_pipe[1], 2))
        else:
            actions.append((os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0))
        try:
            pid = os.posix_spawn(path, list(argv), dict(env), file_actions=actions,
                                 setsid=True, setsigdef=_RESET_SIGNALS, setsigmask=())
        except ValueError:  # an embedded NUL: C would have cut the string
            raise SpawnError(22) from None
        except OSError as exc:
            raise SpawnError(exc.errno or 5) from None
    except BaseException:
        for fd in opened:
            os.close(fd)
        raise
    child = Child(pid)
    if in_pipe:
        os.close(in_pipe[0])
        os.set_blocking(in_pipe[1], False)
        child.stdin = in_pipe[1]
    if out_pipe:
        os.close(out_pipe[1])
        os.set_blocking(out_pipe[0], False)
        child.stdout = out_pipe[0]
    if err_pipe:
        os.close(err_pipe[1])
        os.set_blocking(err_pipe[0], False)
        child.stderr = err_pipe[0]
    return child
