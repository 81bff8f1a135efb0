"""FIFREEZE / FITHAW / FITRIM on one mounted filesystem, and the hook runner.

Each ioctl helper takes an open descriptor of the mount point (opened with
:func:`open_dir`) and raises :class:`OSError` with the kernel's errno; the
command layer turns errno into qemu-ga's texts.  ``run_helper`` is qemu-ga
10.2's helper runner: its own session, stdin on /dev/null, stdout and stderr
captured into the error text.
"""
from __future__ import annotations

import fcntl
import os
import struct
import subprocess
from typing import List, Optional, Sequence, Tuple

from qga.errors import QgaError

# _IOWR('X', 119, int), _IOWR('X', 120, int), _IOWR('X', 121, struct fstrim_range)
FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
FITRIM = 0xC0185879

_RANGE = struct.Struct("=QQQ")  # struct fstrim_range {start, len, minlen}
UINT64_MAX = (1 << 64) - 1


def open_dir(path: str) -> int:
    """``open(path, O_RDONLY|O_CLOEXEC)`` as qemu-ga does for each mount."""
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def freeze(fd: int) -> None:
    """FIFREEZE the filesystem of ``fd``."""
    fcntl.ioctl(fd, FIFREEZE, 0)


def thaw(fd: int) -> None:
    """FITHAW the filesystem of ``fd`` (one level of a nested freeze)."""
    fcntl.ioctl(fd, FITHAW, 0)


def thaw_all_levels(fd: int) -> bool:
    """Repeat FITHAW until it fails; True when at least one succeeded."""
    thawed = False
    while True:
        try:
            thaw(fd)
        except OSError:
            return thawed
        thawed = True


def _to_int64(value: int) -> int:
    """C's cast of a u64 result to the schema's int64."""
    return value - (1 << 64) if value >= 1 << 63 else value


def trim(fd: int, minimum: int = 0) -> Tuple[int, int]:
    """FITRIM the whole filesystem; returns (trimmed bytes, minimum used)."""
    buf = bytearray(_RANGE.pack(0, UINT64_MAX, minimum & UINT64_MAX))
    fcntl.ioctl(fd, FITRIM, buf, True)
    _start, length, minlen = _RANGE.unpack(buf)
    return _to_int64(length), _to_int64(minlen)


def run_helper(argv: Sequence[str], action: str, timeout: Optional[float] = None) -> None:
    """Run a helper program as qemu-ga 10.2's ``ga_run_command`` does.

    Raises :class:`QgaError` with ``child process has failed to <action>: …``
    texts.  The child is waited for here (not by the agent's SIGCHLD reaper:
    only children registered with the loop are reaped there).
    """
    args: List[str] = list(argv)
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                close_fds=True, restore_signals=True)
    except OSError as exc:
        # qemu-ga's forked child reports a failed exec on its output and exits 1.
        output = f"failed to exec '{args[0]}': {os.strerror(exc.errno or 0)}\n"
        raise QgaError(f"child process has failed to {action}: {output}") from None
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        raise QgaError(f"child process has failed to {action}: timed out after {timeout:g} seconds") from None
    text = out.decode("utf-8", "replace")
    if proc.returncode < 0:
        raise QgaError("child process has terminated abnormally" + (f": {text}" if text else ""))
    if proc.returncode:
        if text:
            raise QgaError(f"child process has failed to {action}: {text}")
        raise QgaError(f"child process has failed to {action}: exit status {proc.returncode}")
