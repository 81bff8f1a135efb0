"""A filesystem that never answers, visible only to one agent process.

The test opens ``/dev/fuse`` and mounts a FUSE filesystem with that file
descriptor but never reads it: the kernel's INIT request stays unanswered,
so every ``open``/``stat``/``statvfs`` below the mount point blocks, exactly
like a hung network filesystem.  No FUSE library is needed.

The mount is made in a private mount namespace created for the agent
(``unshare(CLONE_NEWNS)`` between fork and exec), so no other process on
this machine (``df``, other tests walking the mount table) can get stuck on
it, and it disappears with the agent even if the test dies.  Closing our
descriptor aborts the connection: stuck calls then fail with ENOTCONN.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
from typing import Dict, List, Optional, Sequence

from tests.agentproc import AgentProcess

CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 16384, 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _no_fuse() -> Optional[str]:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    with open("/proc/filesystems", encoding="ascii") as f:
        if not any(line.split()[-1] == "fuse" for line in f if line.strip()):
            return "the kernel has no fuse filesystem"
    return None


def fuse_unavailable() -> Optional[str]:
    """Why a hung FUSE mount cannot be made here, or None; loads the fuse module if needed."""
    if os.geteuid() != 0:
        return "needs uid 0 to mount"
    if _no_fuse() is None:
        return None
    # Only when missing: modprobe fails where /proc/modules is absent (containers) even
    # though fuse is built in or already loaded.
    try:
        res = subprocess.run(["modprobe", "fuse"], capture_output=True, text=True, timeout=120)
        tried = f"modprobe fuse: exit {res.returncode} {res.stderr.strip()}"
    except OSError as e:
        tried = f"modprobe fuse: {e}"
    problem = _no_fuse()
    return None if problem is None else f"{problem} ({tried})"


class HungFsAgent(AgentProcess):
    """An agent in its own mount namespace with a hung FUSE mount at ``mountpoint``."""

    def __init__(self, argv: Sequence[str], tmpdir: str, mountpoint: str,
                 env: Optional[Dict[str, str]] = None, blockdev: Optional[str] = None) -> None:
        """``blockdev``: mount it as ``fuseblk``, so the mount has that device's number and is in
        the agent's mount list (guest-get-fsinfo statvfs-es it); plain ``fuse`` has major 0."""
        os.makedirs(mountpoint, exist_ok=True)
        self.mountpoint = mountpoint
        self.fuse_fd: Optional[int] = os.open("/dev/fuse", os.O_RDWR)
        fd = self.fuse_fd
        opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
        source, fstype = b"qgahung", b"fuse.qgahung"
        if blockdev is not None:
            source, fstype, opts = blockdev.encode(), b"fuseblk", opts + b",blksize=4096"

        def in_child() -> None:
            _check(_libc.unshare(CLONE_NEWNS), "unshare")
            _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
            _check(_libc.mount(source, mountpoint.encode(), fstype, MS_NOSUID | MS_NODEV, opts), "mount fuse")
            os.close(fd)  # only the test holds the connection

        try:
            super().__init__(argv, tmpdir, env, pass_fds=(fd,), preexec_fn=in_child)
        except BaseException:
            self.release()
            raise

    def agent_mounts(self) -> List[str]:
        """Mount points seen by the agent (its /proc/PID/mountinfo)."""
        with open(f"/proc/{self.pid}/mountinfo", encoding="utf-8") as f:
            return [line.split()[4] for line in f]

    def release(self) -> None:
        """Abort the FUSE connection: calls stuck on the mount fail with ENOTCONN."""
        if self.fuse_fd is not None:
            os.close(self.fuse_fd)
            self.fuse_fd = None

    def cleanup(self) -> None:
        """Always: abort the connection, lazily unmount in the agent's namespace, stop it."""
        self.release()
        if self.proc.poll() is None:
            subprocess.run(["nsenter", "-t", str(self.pid), "-m", "umount", "-l", self.mountpoint],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        try:
            self.stop()
        except AssertionError:
            pass
