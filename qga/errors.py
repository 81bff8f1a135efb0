"""Errors that travel over the wire as ``{"error": {"class": ..., "desc": ...}}``,
and the root of the agent's internal errors, which never do.

qemu-ga on Linux only ever emits two classes: ``CommandNotFound`` (unknown or
disabled commands) and ``GenericError`` (everything else).
"""
from __future__ import annotations

import errno as _errno
import os
from typing import Dict, Optional


class InternalError(Exception):
    """Root of the agent's own failures: start-up, configuration, state, command line,
    socket activation, spawning, sysfs, key files.  Never sent as such: the
    command layer turns the ones a command meets into a :class:`QgaError`."""


class QgaError(Exception):
    """A command failure reported to the host as ``GenericError``."""

    error_class = "GenericError"

    def __init__(self, desc: str) -> None:
        super().__init__(desc)
        self.desc = desc

    def to_wire(self) -> Dict[str, str]:
        """The ``error`` member of a reply (class before desc: QEMU's order)."""
        return {"class": self.error_class, "desc": self.desc}


class CommandNotFound(QgaError):
    """Unknown, blocked, not allowed or frozen-gated command."""

    error_class = "CommandNotFound"


def strerror(err: int) -> str:
    """C ``strerror`` text for an errno value."""
    return os.strerror(err)


def os_error(prefix: str, exc: OSError, path: Optional[str] = None) -> QgaError:
    """``<prefix>: <strerror>`` as qemu-ga's ``error_setg_errno`` builds it.

    EACCES/EPERM get a hint naming the object and SELinux when it is enforcing,
    because these failures are otherwise opaque to administrators.
    """
    code = exc.errno or 0
    desc = f"{prefix}: {strerror(code)}" if code else prefix
    if code in (_errno.EACCES, _errno.EPERM) and selinux_enforcing():
        what = f" on '{path}'" if path else ""
        desc += f" (denied{what}; SELinux is enforcing: check the audit log and virt_qemu_ga_* booleans)"
    return QgaError(desc)


def selinux_enforcing(path: str = "/sys/fs/selinux/enforce") -> bool:
    """True when SELinux is present and enforcing."""
    try:
        with open(path, "rb") as f:
            return f.read(1) == b"1"
    except OSError:
        return False
