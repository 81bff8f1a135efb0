"""``~/.ssh/authorized_keys`` access that a guest user cannot subvert.

The agent runs as root inside a directory the user controls, so every step
is done relative to file descriptors and never follows a symbolic link the
user may have planted:

* the home directory itself (an administrator's choice, possibly a symlink
  such as /home -> /var/home) is opened normally;
* ``.ssh`` is opened with ``O_DIRECTORY|O_NOFOLLOW`` relative to it (created
  with ``mkdirat`` 0700 and fchown/fchmod on its descriptor when missing);
* ``authorized_keys`` is read with ``O_NOFOLLOW|O_NONBLOCK`` and must be a
  regular file (a FIFO cannot hang the agent, a hard link to another user's
  file cannot be read);
* writes go to a new temporary file (``O_CREAT|O_EXCL|O_NOFOLLOW``) in the
  same directory, which gets the user's ownership and mode 0600 through
  fchown/fchmod *before* it atomically replaces the old file.  An existing
  entry that is a symlink or not a regular file is refused, not replaced.

Failures are :class:`KeysError` (which phase and step failed, on which
path, with which OSError); the command layer words them as qemu-ga does.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import Optional

from qga.cstring import c_text
from qga.errors import InternalError
from qga.linux.sysfs import read_fd

KEYS_FILE = "authorized_keys"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class KeysError(InternalError):
    """A failed step on a user's keys.

    ``phase`` is ``"read"`` (steps ``open``, ``read``, ``type``: not a regular
    file, ``hardlink``: another user's file), ``"dir"`` (creating ``.ssh``:
    ``create``, ``refuse``: a symlink or not a directory, ``chown``,
    ``chmod``), ``"write"`` (``opendir``, ``stat``, ``refuse``: the entry is
    not a regular file, ``create``, ``write`` and ``rename`` of the temporary
    file ``tmp_path``) or ``"file"`` (``chown``/``chmod`` of the new file).
    ``cause`` is the OSError met, None for a refusal.
    """

    def __init__(self, phase: str, step: str, user: UserSsh, cause: Optional[OSError] = None,
                 tmp_path: Optional[str] = None) -> None:
        super().__init__(f"{phase} {step} {tmp_path or user.keys_path}" + (f": {cause}" if cause else ""))
        self.phase = phase
        self.step = step
        self.ssh_path = user.ssh_path
        self.keys_path = user.keys_path
        self.tmp_path = tmp_path
        self.cause = cause


def build_filename(*parts: str) -> str:
    """g_build_filename: join with one ``/`` between elements."""
    path = parts[0]
    for part in parts[1:]:
        if not path:
            path = part
        elif path.endswith("/"):
            path += part
        else:
            path += "/" + part
    return path


class UserSsh:
    """One user's ``~/.ssh``: paths for messages, descriptors for access."""

    def __init__(self, home: str, uid: int, gid: int) -> None:
        self.home = home
        self.uid = uid
        self.gid = gid
        self.ssh_path = build_filename(home, ".ssh")
        self.keys_path = build_filename(self.ssh_path, KEYS_FILE)

    # -- reading -----------------------------------------------------------
    def _open_ssh_dir(self) -> int:
        home_fd = os.open(self.home or ".", _DIR_FLAGS)
        try:
            return os.open(".ssh", _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=home_fd)
        finally:
            os.close(home_fd)

    def exists(self) -> bool:
        """Whether an ``authorized_keys`` entry (of any type) exists."""
        try:
            ssh_fd = self._open_ssh_dir()
        except OSError:
            return False
        try:
            os.stat(KEYS_FILE, dir_fd=ssh_fd, follow_symlinks=False)
            return True
        except OSError:
            return False
        finally:
            os.close(ssh_fd)

    def read(self) -> str:
        """The file's text; KeysError (phase ``read``) on failure."""
        try:
            ssh_fd = self._open_ssh_dir()
        except OSError as exc:
            raise KeysError("read", "open", self, exc) from None
        try:
            try:
                fd = os.open(KEYS_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=ssh_fd)
            except OSError as exc:
                raise KeysError("read", "open", self, exc) from None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise KeysError("read", "type", self)
                if st.st_nlink > 1 and st.st_uid not in (self.uid, 0):
                    raise KeysError("read", "hardlink", self)
                data = read_fd(fd)
            except OSError as exc:
                raise KeysError("read", "read", self, exc) from None
            finally:
                os.close(fd)
        finally:
            os.close(ssh_fd)
        # glib hands back the bytes; C string handling ends at the first NUL.
        return c_text(data)

    # -- writing -----------------------------------------------------------
    def _ensure_ssh_dir(self) -> int:
        """Open ``.ssh``, creating it (0700, the user's) when it does not exist."""
        try:
            home_fd = os.open(self.home or ".", _DIR_FLAGS)
        except OSError as exc:
            raise KeysError("dir", "create", self, exc) from None
        try:
            try:
                return os.open(".ssh", _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=home_fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise KeysError("dir", "refuse", self) from None
                if exc.errno != errno.ENOENT:
                    raise KeysError("dir", "create", self, exc) from None
            try:
                os.mkdir(".ssh", 0o700, dir_fd=home_fd)
                ssh_fd = os.open(".ssh", _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=home_fd)
            except OSError as exc:
                raise KeysError("dir", "create", self, exc) from None
        finally:
            os.close(home_fd)
        try:
            os.fchown(ssh_fd, self.uid, self.gid)
        except OSError as exc:
            os.close(ssh_fd)
            raise KeysError("dir", "chown", self, exc) from None
        try:
            os.fchmod(ssh_fd, 0o700)
        except OSError as exc:
            os.close(ssh_fd)
            raise KeysError("dir", "chmod", self, exc) from None
        return ssh_fd

    def write(self, text: str, create_dir: bool) -> None:
        """Atomically replace the file with ``text`` (user-owned, 0600); KeysError on failure."""
        if create_dir:
            ssh_fd = self._ensure_ssh_dir()
        else:
            try:
                ssh_fd = self._open_ssh_dir()
            except OSError as exc:
                raise KeysError("write", "opendir", self, exc) from None
        try:
            self._refuse_special(ssh_fd)
            self._replace(ssh_fd, text.encode("utf-8", "surrogateescape"))
        finally:
            os.close(ssh_fd)

    def _refuse_special(self, ssh_fd: int) -> None:
        try:
            st = os.stat(KEYS_FILE, dir_fd=ssh_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise KeysError("write", "stat", self, exc) from None
        if not stat.S_ISREG(st.st_mode):
            raise KeysError("write", "refuse", self)

    def _replace(self, ssh_fd: int, data: bytes) -> None:
        tmp = f"{KEYS_FILE}.{os.urandom(4).hex()}"  # not secrets: it loads libcrypto
        tmp_path = build_filename(self.ssh_path, tmp)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=ssh_fd)
        except OSError as exc:
            raise KeysError("write", "create", self, exc, tmp_path) from None
        done = False
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError as exc:
                raise KeysError("write", "write", self, exc, tmp_path) from None
            try:
                os.fchown(fd, self.uid, self.gid)
            except OSError as exc:
                raise KeysError("file", "chown", self, exc) from None
            try:
                os.fchmod(fd, 0o600)
            except OSError as exc:
                raise KeysError("file", "chmod", self, exc) from None
            try:
                os.rename(tmp, KEYS_FILE, src_dir_fd=ssh_fd, dst_dir_fd=ssh_fd)
            except OSError as exc:
                raise KeysError("write", "rename", self, exc, tmp_path) from None
            done = True
        finally:
            os.close(fd)
            if not done:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=ssh_fd)


def read_or_none(user: UserSsh) -> Optional[str]:
    """The text, or None when it cannot be read (add's "start afresh" case)."""
    try:
        return user.read()
    except KeysError:
        return None
