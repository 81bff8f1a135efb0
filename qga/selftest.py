"""``--self-test``: what an administrator needs to know, checked without changing anything.

Checks, in order: the channel (the device exists and opens, or the socket's
directory is writable), the state directory (exists, writable, no frozen
marker), the pid file and log file locations, the fsfreeze hook, the mounts
that guest-fsfreeze-freeze would freeze (with their types) and those
``fsfreeze-exclude`` keeps out, SELinux, and the command policy.  Nothing is
created, written, locked, bound or frozen: the channel device is opened
``O_RDWR|O_NONBLOCK`` and closed at once, mount points are opened read-only
as a freeze would, then closed.

Each line is ``OK``, ``WARN``, ``FAIL`` or ``INFO``; the exit status is 1 when
any check failed.
"""
from __future__ import annotations

import errno
import os
import socket
import stat
import sys
from typing import Callable, List, Optional, TextIO, Tuple

from qga.config import Config
from qga.errors import selinux_enforcing
from qga.linux.helpers import unsafe_to_run

#: Filesystem types whose kernel driver implements FIFREEZE (others answer
#: EOPNOTSUPP, which guest-fsfreeze-freeze skips).
FREEZE_SUPPORTED = frozenset({"ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs", "gfs2", "nilfs2",
                              "reiserfs", "ocfs2", "bcachefs"})

Result = Tuple[str, str, str]  # (status, subject, detail)


class SelfTest:
    """Collects results; :meth:`run` performs every check."""

    def __init__(self, config: Config, selinux_path: str = "/sys/fs/selinux/enforce",
                 mountinfo: str = "/proc/self/mountinfo") -> None:
        self.config = config
        self.selinux_path = selinux_path
        self.mountinfo = mountinfo
        self.results: List[Result] = []

    def add(self, status: str, subject: str, detail: str) -> None:
        """Record one result line."""
        self.results.append((status, subject, detail))

    @property
    def failed(self) -> int:
        """Number of failed checks."""
        return sum(1 for r in self.results if r[0] == "FAIL")

    # -- checks ---------------------------------------------------------------
    def check_channel(self) -> None:
        """The port exists and can be opened (device) or created (socket directory)."""
        method, path = self.config.method, self.config.effective_path() or ""
        subject = f"channel {method} {path}"
        if os.environ.get("LISTEN_FDS"):
            self.add("INFO", subject, "socket activation: the listening socket is passed by systemd")
            return
        if method in ("virtio-serial", "isa-serial"):
            try:
                st = os.stat(path)
            except OSError as exc:
                hint = " (is the virtio-serial port configured for this guest?)" \
                    if method == "virtio-serial" else ""
                self.add("FAIL", subject, f"{exc.strerror}{hint}")
                return
            if not stat.S_ISCHR(st.st_mode):
                self.add("FAIL", subject, "not a character device")
                return
            try:
                fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    self.add("WARN", subject, "exists but is busy: another agent holds it open")
                else:
                    self.add("FAIL", subject, f"cannot be opened: {exc.strerror}{self._selinux_hint(exc)}")
                return
            os.close(fd)
            self.add("OK", subject, "exists and can be opened read/write")
        elif method == "unix-listen":
            directory = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(directory):
                self.add("FAIL", subject, f"directory {directory} does not exist")
            elif not os.access(directory, os.W_OK | os.X_OK):
                self.add("FAIL", subject, f"directory {directory} is not writable")
            else:
                note = " (a socket is already there: another agent may be listening)" \
                    if os.path.exists(path) else ""
                self.add("OK", subject, f"directory {directory} is writable{note}")
        elif method == "vsock-listen":
            family = getattr(socket, "AF_VSOCK", None)
            if family is None:
                self.add("FAIL", subject, "this Python has no AF_VSOCK")
                return
            try:
                socket.socket(family, socket.SOCK_STREAM).close()
            except OSError as exc:
                self.add("FAIL", subject, f"cannot create a vsock socket: {exc.strerror} "
                                          "(is the vsock transport module loaded?)")
                return
            self.add("OK", subject, "vsock sockets can be created")
        else:
            self.add("FAIL", subject, "unknown method")

    def check_statedir(self) -> None:
        """The state directory exists, is writable, is private, holds no frozen marker."""
        statedir = self.config.statedir
        subject = f"state directory {statedir}"
        try:
            st = os.lstat(statedir)
        except OSError as exc:
            self.add("FAIL", subject, exc.strerror or str(exc))
            return
        if stat.S_ISLNK(st.st_mode):
            target = os.path.realpath(statedir)
            self.add("INFO", subject, f"is a symlink to {target}")
            st = os.stat(statedir)
        if not stat.S_ISDIR(st.st_mode):
            self.add("FAIL", subject, "is not a directory")
            return
        if not os.access(statedir, os.W_OK | os.X_OK):
            self.add("FAIL", subject, "is not writable")
            return
        if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
            self.add("WARN", subject, "is world-writable without the sticky bit")
        else:
            self.add("OK", subject, f"is writable (mode {stat.S_IMODE(st.st_mode):04o})")
        marker = os.path.join(statedir, "qga.state.isfrozen")
        if os.path.lexists(marker):
            self.add("FAIL", "frozen marker", f"{marker} exists: filesystems may still be frozen "
                                              "by a previous instance (guest-fsfreeze-thaw, or "
                                              "fsfreeze --unfreeze and remove the file)")

    def _check_parent_writable(self, subject: str, path: str) -> None:
        directory = os.path.dirname(os.path.abspath(path))
        if os.path.islink(path):
            self.add("FAIL", subject, "is a symlink (it would be refused)")
        elif not os.path.isdir(directory):
            self.add("FAIL", subject, f"directory {directory} does not exist")
        elif not os.access(directory, os.W_OK | os.X_OK) and not os.access(path, os.W_OK):
            self.add("FAIL", subject, f"directory {directory} is not writable")
        else:
            self.add("OK", subject, "can be created")

    def check_files(self) -> None:
        """Pid file, log file and fsfreeze hook."""
        if self.config.daemon or self.config.pidfile_given:
            self._check_parent_writable(f"pid file {self.config.pidfile}", self.config.pidfile)
        if self.config.logfile:
            self._check_parent_writable(f"log file {self.config.logfile}", self.config.logfile)
        hook = self.config.fsfreeze_hook
        if hook:
            refusal = unsafe_to_run(hook)
            if not os.path.isfile(hook):
                self.add("FAIL", f"fsfreeze hook {hook}", "does not exist")
            elif not os.access(hook, os.X_OK):
                self.add("FAIL", f"fsfreeze hook {hook}", "is not executable")
            elif refusal:
                self.add("FAIL", f"fsfreeze hook {hook}", f"would be refused: {refusal}")
            else:
                self.add("OK", f"fsfreeze hook {hook}", "exists and is executable")

    def check_mounts(self) -> None:
        """The mounts guest-fsfreeze-freeze works on, with their types, and the excluded ones."""
        from qga.linux.mounts import exclusion, list_mounts

        try:
            mounts = list_mounts(self.mountinfo)
        except OSError as exc:
            self.add("FAIL", "mounts", f"cannot read the mount table: {exc.strerror}")
            return
        if not mounts:
            self.add("WARN", "mounts", "no block-device filesystem: guest-fsfreeze-freeze freezes nothing")
            return
        for mount in mounts:
            subject = f"mount {mount.dirname} ({mount.devtype}, {mount.source})"
            pattern = exclusion(mount, self.config.fsfreeze_exclude)
            if pattern is not None:
                self.add("INFO", subject, f"not frozen by guest-fsfreeze-freeze: fsfreeze-exclude "
                                          f"entry '{pattern}' (freeze-list can still name it)")
                continue
            try:
                fd = os.open(mount.dirname, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                self.add("FAIL", subject, f"cannot be opened for freezing: {exc.strerror}"
                                          f"{self._selinux_hint(exc)}")
                continue
            os.close(fd)
            if mount.devtype in FREEZE_SUPPORTED:
                self.add("OK", subject, "can be frozen")
            else:
                self.add("INFO", subject, "in the freeze list; the filesystem may not support "
                                          "freezing (skipped if it answers EOPNOTSUPP)")

    def _selinux_hint(self, exc: OSError) -> str:
        if exc.errno in (errno.EACCES, errno.EPERM) and selinux_enforcing(self.selinux_path):
            return " (SELinux is enforcing: check the audit log and virt_qemu_ga_* booleans)"
        return ""

    def check_selinux(self) -> None:
        """Whether SELinux is enforcing, and our context."""
        if not os.path.exists(self.selinux_path):
            self.add("INFO", "SELinux", "not enabled")
            return
        context = ""
        try:
            with open("/proc/self/attr/current", encoding="utf-8", errors="replace") as f:
                context = f.read().strip("\0\n ")
        except OSError:
            pass
        mode = "enforcing" if selinux_enforcing(self.selinux_path) else "permissive"
        self.add("INFO", "SELinux", f"{mode}{f', context {context}' if context else ''}")

    def check_policy(self) -> None:
        """Enabled and disabled commands by group."""
        from qga.command import GROUPS
        from qga.commands import load
        from qga.registry import Registry

        registry = Registry(load(), extensions=self.config.extension_commands)
        try:
            registry.configure(self.config.allow_rpcs, self.config.block_rpcs, self.config.block_groups)
        except ValueError as exc:
            self.add("FAIL", "command policy", str(exc))
            return
        for group in GROUPS:
            names = [n for n, c in registry.commands.items() if c.group == group]
            if not names:
                continue
            off = [n for n in names if not registry.is_enabled(registry.commands[n])]
            if not off:
                state = "all enabled"
            elif len(off) == len(names):
                state = "all disabled"
            else:
                state = "disabled: " + ", ".join(off)
            self.add("INFO", f"commands [{group}]", f"{len(names)} commands, {state}")
        if "protocol" in self.config.block_groups:
            self.add("WARN", "command policy", "block-groups=protocol has no effect: guest-sync, "
                                               "guest-ping and guest-info cannot be disabled")
        disabled = registry.policy_disabled()
        self.add("INFO", "disabled commands", ", ".join(disabled) if disabled else "none")

    def run(self) -> int:
        """Run every check; the number of failures."""
        checks: List[Callable[[], None]] = [self.check_channel, self.check_statedir, self.check_files,
                                            self.check_mounts, self.check_selinux, self.check_policy]
        for check in checks:
            try:
                check()
            except Exception as exc:  # a check must report, never crash the report
                self.add("FAIL", check.__name__, f"unexpected error: {type(exc).__name__}: {exc}")
        return self.failed

    def report(self, out: TextIO) -> None:
        """The readable report."""
        out.write("qemu-ga-py self-test (nothing is changed)\n")
        for status, subject, detail in self.results:
            out.write(f"[{status:^4}] {subject}: {detail}\n")
        failed = self.failed
        out.write(f"result: {'OK' if not failed else f'{failed} problem(s) found'}\n")


def run_self_test(config: Config, out: Optional[TextIO] = None,
                  selinux_path: str = "/sys/fs/selinux/enforce") -> int:
    """``--self-test``: print the report; exit status 1 when a check failed."""
    test = SelfTest(config, selinux_path=selinux_path)
    test.run()
    test.report(out or sys.stdout)
    return 1 if test.failed else 0
