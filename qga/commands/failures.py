"""qemu-ga's texts for the failures qga.linux reports, where several command
modules meet the same one (declares no command)."""
from __future__ import annotations

import errno

from qga.errors import QgaError, os_error, strerror
from qga.linux.helpers import HelperFailed


def could_not_open(path: str, exc: OSError) -> QgaError:
    """``Could not open '<path>': <strerror>`` (10.2's wording for every reader)."""
    return os_error(f"Could not open '{path}'", exc, path)


def helper_error(exc: HelperFailed) -> QgaError:
    """qemu-ga's text for a helper program that failed (guest-shutdown,
    guest-set-time, guest-set-user-password, the fsfreeze hook, suspend)."""
    code = (exc.cause.errno or 0) if exc.cause else 0
    if exc.how == "spawn":  # glib's g_spawn_sync message
        return QgaError("failed to create child process, error "
                        f"'Failed to execute child process “{exc.program}” ({strerror(code)})'")
    if exc.how == "signal":
        return QgaError("child process has terminated abnormally" + (f": {exc.output}" if exc.output else ""))
    if exc.how == "exec":
        # qemu-ga forks first; the child reports the exec failure on the
        # captured pipe and exits 1, which the parent turns into this text.
        detail = f"failed to exec '{exc.program}': {strerror(code or errno.ENOENT)}\n"
    elif exc.how == "timeout":
        detail = f"timed out after {exc.timeout:g} seconds"
    else:
        detail = exc.output or f"exit status {exc.status}"
    return QgaError(f"child process has failed to {exc.action}: {detail}")
