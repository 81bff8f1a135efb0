"""The state directory: the persistent file-handle counter and the frozen marker.

``<statedir>/qga.state`` holds ``[global] fd_counter=N``: guest-file handles
are never reused, even across restarts.  ``<statedir>/qga.state.isfrozen``
exists while filesystems are frozen, so that a restarted agent comes back in
frozen mode instead of believing the guest is thawed.  It stays empty, as
qemu-ga creates it: when the freeze began is recorded beside it, in
``<statedir>/qga.state.isfrozen.since`` (ours only; removed with the marker),
so that ``fsfreeze-timeout`` counts from the original freeze after a restart.
"""
from __future__ import annotations

import contextlib
import os
import stat
from typing import NamedTuple, Optional

from qga import keyfile
from qga.errors import InternalError, QgaError
from qga.log import get_logger

log = get_logger(__name__)

FIRST_HANDLE = 1000


class StateError(InternalError):
    """The state directory cannot be used; the agent cannot start."""


class FreezeStart(NamedTuple):
    """When a freeze began: CLOCK_BOOTTIME seconds, meaningful only in the boot it names."""

    boot_id: str
    boottime: float


class StateDir:
    """Files the agent keeps in its state directory."""

    def __init__(self, statedir: str) -> None:
        self.statedir = statedir
        self.state_path = os.path.join(statedir, "qga.state")
        self.frozen_path = self.state_path + ".isfrozen"
        self.since_path = self.frozen_path + ".since"
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
        try:
            _replace_file(self.state_path, text, fsync=True)
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

    def _marker_identity(self) -> str:
        # A marker qemu-ga (or anyone) re-created since is another file: the
        # record does not describe its freeze.
        st = os.lstat(self.frozen_path)
        return f"{st.st_ino}:{st.st_mtime_ns}"

    def record_freeze_start(self, start: FreezeStart) -> None:
        """Note beside the (just created) marker when this freeze began.

        Best effort: without the record a restarted agent counts the freeze
        time limit from its own start, as before.
        """
        try:
            text = keyfile.dump({"freeze": {"boot-id": start.boot_id, "boottime": repr(start.boottime),
                                            "marker": self._marker_identity()}})
            # No fsync: the record means something only within this boot, and
            # the page cache survives the agent being killed.
            _replace_file(self.since_path, text, fsync=False)
        except OSError as exc:
            log.warning("cannot record the freeze start in %s: %s", self.since_path, exc.strerror)

    def freeze_start(self) -> Optional[FreezeStart]:
        """The recorded start of the freeze the marker stands for; None when unknown."""
        try:
            with open(self.since_path, encoding="utf-8") as f:
                entries = keyfile.parse(f.read()).get("freeze", {})
            if entries.get("marker") != self._marker_identity():
                return None
            return FreezeStart(entries["boot-id"], float(entries["boottime"]))
        except (OSError, ValueError, KeyError):
            return None

    def remove_frozen_marker(self) -> None:
        """Remove the marker (and the record of when the freeze began) after a thaw."""
        _unlink(self.frozen_path)
        self.forget_freeze_start()

    def forget_freeze_start(self) -> None:
        """Remove the freeze-start record (also one left behind when qemu-ga thawed)."""
        _unlink(self.since_path)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _replace_file(path: str, text: str, fsync: bool) -> None:
    """Write ``path`` atomically (0600, never through a symlink)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
