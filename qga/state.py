"""The state directory: the persistent file-handle counter and the frozen marker.

``<statedir>/qga.state`` holds ``[global] fd_counter=N``: guest-file handles
are never reused, even across restarts.  ``<statedir>/qga.state.isfrozen``
exists while filesystems are frozen, so that a restarted agent comes back in
frozen mode instead of believing the guest is thawed.
"""
from __future__ import annotations

import contextlib
import os
import stat

from qga import keyfile
from qga.errors import QgaError

FIRST_HANDLE = 1000


class StateError(Exception):
    """The state directory cannot be used; the agent cannot start."""


class StateDir:
    """Files the agent keeps in its state directory."""

    def __init__(self, statedir: str) -> None:
        self.statedir = statedir
        self.state_path = os.path.join(statedir, "qga.state")
        self.frozen_path = self.state_path + ".isfrozen"
        self.fd_counter = FIRST_HANDLE

    def ensure_dir(self) -> None:
        """Create a missing state directory 0700 (qemu-ga refuses to start instead).

        An existing directory is used as it is, but not through a symlink that
        someone other than root planted (``/var/run -> /run`` is root's).
        """
        try:
            os.mkdir(self.statedir, 0o700)
        except FileExistsError:
            st = os.lstat(self.statedir)
            if stat.S_ISLNK(st.st_mode) and st.st_uid != 0:
                raise StateError(f"state directory {self.statedir} is a symbolic link owned by uid "
                                 f"{st.st_uid}: refusing it") from None
        except OSError as exc:
            raise StateError(f"unable to create state directory {self.statedir}: {exc.strerror}") from exc

    def load(self, create: bool = True) -> None:
        """Read the counter, creating the file when missing (not while frozen)."""
        self.ensure_dir()
        try:
            with open(self.state_path, encoding="utf-8", errors="strict") as f:
                groups = keyfile.parse(f.read())
        except FileNotFoundError:
            if create:
                self._write(self.fd_counter)
            return
        except (OSError, ValueError) as exc:
            raise StateError(f"error loading persistent state from path: {self.state_path}, {exc}") from exc
        value = groups.get("global", {}).get("fd_counter")
        if value is not None:
            # qemu-ga's g_key_file_get_integer failure leaves 0 (observed).
            self.fd_counter = int(value) if value.lstrip("-").isdigit() else 0

    def _write(self, counter: int) -> None:
        text = keyfile.dump({"global": {"fd_counter": str(counter)}})
        tmp = self.state_path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, text.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.state_path)
        except OSError as exc:
            raise StateError(f"failed to write persistent state to {self.state_path}: {exc.strerror}") from exc

    def next_handle(self) -> int:
        """Take a guest-file handle number and commit the counter to disk."""
        handle = self.fd_counter
        try:
            self._write(handle + 1)
        except StateError as exc:
            raise QgaError("failed to commit persistent state to disk") from exc
        self.fd_counter = handle + 1
        return handle

    def frozen_marker_exists(self) -> bool:
        """True when a (possibly previous) agent left filesystems frozen."""
        return os.path.lexists(self.frozen_path)

    def create_frozen_marker(self) -> None:
        """Create the marker (0600, never through a symlink) before any FIFREEZE."""
        try:
            fd = os.open(self.frozen_path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            os.close(fd)
        except OSError as exc:
            raise QgaError(f"failed to create frozen state file {self.frozen_path}: {exc.strerror}") from exc

    def remove_frozen_marker(self) -> None:
        """Remove the marker after a thaw."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.frozen_path)
