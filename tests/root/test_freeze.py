"""fsfreeze/thaw/fstrim on loop-mounted ext4 and xfs images (needs root).

Only test mounts are ever frozen: every freeze uses freeze-list with the test
mount points (a plain guest-fsfreeze-freeze would freeze this machine's own
filesystems); freeze-all is exercised only at handler level, on the real
mount list cut down to the test's loop mounts.  Agent tests that must not
have their freeze undone by someone else's thaw-all use a mount that exists
only in a private mount namespace (:class:`PrivateExt4`).  Thaw is harmless elsewhere (FITHAW on a thawed filesystem
fails with EINVAL and is not counted).  Fixtures always thaw, unmount and
detach, even when a test fails.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from qga import keyfile
from qga.agent import FROZEN_AT_START
from qga.commands import freeze as fz
from qga.commands import files
from qga.config import Config
from qga.context import Context
from qga.errors import QgaError
from qga.linux import fsfreeze as fs
from qga.linux import mounts as mounts_mod
from qga.loop import Loop
from qga.command import start_hooks
from qga.registry import Registry
from qga.selftest import SelfTest
from qga.state import StateDir
from tests.agentproc import AgentProcess, ours_argv, start
from tests.hardening.util import wait_signal_delivered
from tests.prereq import require

REPO = Path(__file__).resolve().parents[2]
MKFS = {"ext4": ["mkfs.ext4", "-q", "-F"], "xfs": ["mkfs.xfs", "-q", "-f"]}
SIZE_MB = {"ext4": 64, "xfs": 320}  # mkfs.xfs refuses filesystems under 300 MB

root = pytest.mark.root
#: Kernel wait channels of a task stopped by sb_start_write() on a frozen filesystem
#: (percpu_rwsem_wait since Linux 5.8, percpu_down_read's slow path before).
FREEZE_WAITS = ("percpu_rwsem_wait", "__percpu_down_read", "rcuwait_wait_event")


def _thaw_path(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fs.thaw_all_levels(fd)
    finally:
        os.close(fd)


class LoopFs:
    """A filesystem image mounted through a loop device."""

    def __init__(self, fstype: str, workdir: str) -> None:
        self.fstype = fstype
        self.image = os.path.join(workdir, f"{fstype}.img")
        self.mnt = os.path.join(workdir, f"mnt-{fstype}")
        self.dev = ""
        os.mkdir(self.mnt)
        with open(self.image, "wb") as f:
            f.truncate(SIZE_MB[fstype] * 1024 * 1024)
        subprocess.run(MKFS[fstype] + [self.image], check=True, capture_output=True)
        self.dev = subprocess.run(["losetup", "--find", "--show", self.image], check=True,
                                  capture_output=True, text=True).stdout.strip()
        subprocess.run(["mount", self.dev, self.mnt], check=True, capture_output=True)

    def cleanup(self) -> None:
        """Thaw, unmount, detach: every step tolerated to fail."""
        _thaw_path(self.mnt)
        subprocess.run(["umount", self.mnt], capture_output=True)
        if self.dev:
            subprocess.run(["losetup", "-d", self.dev], capture_output=True)
        try:
            os.rmdir(self.mnt)
        except OSError:
            pass


def _need(tool: str) -> None:
    require(None if shutil.which(tool) else f"{tool} not installed")


@pytest.fixture
def workdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="qga-freeze-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["ext4", "xfs"])
def loopfs(request: Any, workdir: str) -> Iterator[LoopFs]:
    _need(MKFS[request.param][0])
    lfs = None
    try:
        lfs = LoopFs(request.param, workdir)
        yield lfs
    finally:
        if lfs is not None:
            lfs.cleanup()


@pytest.fixture
def ext4fs(workdir: str) -> Iterator[LoopFs]:
    _need("mkfs.ext4")
    lfs = None
    try:
        lfs = LoopFs("ext4", workdir)
        yield lfs
    finally:
        if lfs is not None:
            lfs.cleanup()


class PrivateExt4:
    """An ext4 loop mount that exists only in a private mount namespace.

    A sleeping holder process keeps the namespace; agents are started in it
    with nsenter.  No other process on this machine sees the mount, so
    another test's (or session's) thaw of every mount cannot thaw it behind
    a test's back.  From outside, ``outside`` reaches it through the
    holder's ``/proc/PID/root``.
    """

    def __init__(self, workdir: str) -> None:
        for tool in ("mkfs.ext4", "unshare", "nsenter"):
            _need(tool)
        self.image, self.mnt, self.dev = os.path.join(workdir, "private.img"), os.path.join(workdir, "private"), ""
        self.holder: Any = None
        os.mkdir(self.mnt)
        with open(self.image, "wb") as f:
            f.truncate(64 << 20)
        subprocess.run(MKFS["ext4"] + [self.image], check=True, capture_output=True)
        self.dev = subprocess.run(["losetup", "--find", "--show", self.image], check=True,
                                  capture_output=True, text=True).stdout.strip()
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f"mount {self.dev} {self.mnt} && echo mounted && exec sleep infinity"],
            stdout=subprocess.PIPE)
        assert self.holder.stdout.readline() == b"mounted\n", "mount in the private namespace failed"
        self.outside = f"/proc/{self.holder.pid}/root{self.mnt}"

    def nsenter(self, argv: List[str]) -> List[str]:
        """``argv`` run in the namespace."""
        return ["nsenter", f"--target={self.holder.pid}", "--mount", "--", *argv]

    def agent(self, workdir: str, *extra: str, env: Any = None) -> Any:
        """Our agent in the namespace, on ``<workdir>/sock``."""
        return AgentProcess(self.nsenter(ours_argv(workdir, extra)), workdir, env)

    def cleanup(self) -> None:
        """Thaw, unmount, end the namespace, detach."""
        if self.holder is not None:
            _thaw_path(self.outside)
            subprocess.run(self.nsenter(["umount", self.mnt]), capture_output=True)
            self.holder.kill()
            self.holder.wait()
            self.holder.stdout.close()
        if self.dev:
            subprocess.run(["losetup", "-d", self.dev], capture_output=True)


@pytest.fixture
def private_ext4(workdir: str) -> Iterator[PrivateExt4]:
    lfs = None
    try:
        lfs = PrivateExt4(workdir)
        yield lfs
    finally:
        if lfs is not None:
            lfs.cleanup()


@pytest.fixture
def two_ext4(workdir: str) -> Iterator[List[LoopFs]]:
    _need("mkfs.ext4")
    made: List[LoopFs] = []
    try:
        for name in ("a", "b"):
            sub = os.path.join(workdir, name)
            os.mkdir(sub)
            made.append(LoopFs("ext4", sub))
        yield made
    finally:
        for lfs in reversed(made):
            lfs.cleanup()


def make_ctx(statedir: str, **config: Any) -> Context:
    state = StateDir(statedir)
    state.load()
    ctx = Context(Config(**config), state, Loop(), Registry([]))
    for hook in start_hooks():  # as the agent does: the freeze module's thaw on the way out
        hook(ctx)
    return ctx


@pytest.fixture
def ctx(workdir: str) -> Iterator[Context]:
    c = make_ctx(workdir)
    yield c
    if c.frozen:
        fz.do_thaw(c)
    c.loop.close()


class Writer:
    """A child process that writes and fsyncs a file on the mount."""

    def __init__(self, mnt: str) -> None:
        self.path = os.path.join(mnt, "written-while-frozen")
        code = ("import os,sys; fd=os.open(sys.argv[1], os.O_WRONLY|os.O_CREAT, 0o644); "
                "os.write(fd, b'x'*4096); os.fsync(fd)")
        self.proc = subprocess.Popen([sys.executable, "-c", code, self.path])

    def blocked(self, seconds: float = 60) -> bool:
        """True once the writer sleeps on the filesystem's freeze lock, False if it exits first.

        A positive observation (its kernel wait channel), not "still running
        after a while", which a slow start on a loaded machine also satisfies.
        """
        deadline = time.monotonic() + seconds
        wchan = ""
        while self.proc.poll() is None:
            try:
                with open(f"/proc/{self.proc.pid}/wchan", encoding="ascii") as f:
                    wchan = f.read()
            except FileNotFoundError:  # exited meanwhile
                continue
            if wchan in FREEZE_WAITS:
                return True
            assert time.monotonic() < deadline, f"the writer neither finished nor blocked (wchan {wchan!r})"
            time.sleep(0.01)
        return False

    def finishes(self, seconds: float = 60) -> bool:
        """True when it completes (successfully) within ``seconds``."""
        try:
            return self.proc.wait(seconds) == 0
        except subprocess.TimeoutExpired:
            return False


# -- handler level ----------------------------------------------------------------------
@root
def test_freeze_list_blocks_writer_until_thaw(ctx: Context, loopfs: LoopFs) -> None:
    assert fz.fsfreeze_freeze_list(ctx, [loopfs.mnt]) == 1
    try:
        assert fz.fsfreeze_status(ctx) == "frozen" and ctx.state.frozen_marker_exists()
        assert ctx.registry.frozen
        writer = Writer(loopfs.mnt)
        assert writer.blocked(), "a write completed on a frozen filesystem"
    finally:
        thawed = fz.fsfreeze_thaw(ctx)
    assert thawed >= 1
    assert writer.finishes()
    assert fz.fsfreeze_status(ctx) == "thawed" and not ctx.state.frozen_marker_exists()
    assert fz.fsfreeze_thaw(ctx) == 0  # a second thaw finds nothing frozen


@root
def test_freeze_nothing(ctx: Context, loopfs: LoopFs) -> None:
    assert fz.fsfreeze_freeze_list(ctx, ["/nonexistent"]) == 0
    assert fz.fsfreeze_freeze_list(ctx, []) == 0
    assert fz.fsfreeze_freeze_list(ctx, [loopfs.mnt + "/"]) == 0  # exact string match only
    assert fz.fsfreeze_status(ctx) == "thawed" and not ctx.state.frozen_marker_exists()


@root
def test_duplicates_in_list_count_once(ctx: Context, loopfs: LoopFs) -> None:
    try:
        assert fz.fsfreeze_freeze_list(ctx, [loopfs.mnt, loopfs.mnt]) == 1
    finally:
        fz.fsfreeze_thaw(ctx)


@root
def test_failure_part_way_thaws_and_reports(ctx: Context, two_ext4: List[LoopFs],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = two_ext4[1], two_ext4[0]  # reverse mount order: b is frozen first
    real_freeze = fs.freeze
    calls: List[int] = []

    def failing_freeze(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_freeze(fd)

    monkeypatch.setattr(fs, "freeze", failing_freeze)
    with pytest.raises(QgaError) as info:
        fz.fsfreeze_freeze_list(ctx, [first.mnt, second.mnt])
    assert info.value.desc == f"failed to freeze {second.mnt}: Input/output error"
    assert not ctx.frozen and not ctx.state.frozen_marker_exists()
    assert Writer(first.mnt).finishes(), "the filesystem frozen first was not thawed"


@root
def test_ebusy_and_eopnotsupp_are_not_counted(ctx: Context, loopfs: LoopFs,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for err in (errno.EBUSY, errno.EOPNOTSUPP):
        def refuse(fd: int, err: int = err) -> None:
            raise OSError(err, os.strerror(err))
        monkeypatch.setattr(fs, "freeze", refuse)
        assert fz.fsfreeze_freeze_list(ctx, [loopfs.mnt]) == 0
        assert not ctx.frozen


@root
def test_hook_arguments_and_order(workdir: str, loopfs: LoopFs) -> None:
    log = os.path.join(workdir, "hook.log")
    hook = os.path.join(workdir, "hook.sh")
    with open(hook, "w") as f:
        f.write(f"#!/bin/sh\necho \"$# $1\" >> {log}\n")
    os.chmod(hook, 0o755)
    c = make_ctx(workdir, fsfreeze_hook=hook)
    assert fz.fsfreeze_freeze_list(c, ["/nonexistent"]) == 0  # hook runs, no thaw hook
    assert fz.fsfreeze_freeze_list(c, [loopfs.mnt]) == 1
    assert fz.fsfreeze_thaw(c) >= 1
    assert open(log).read() == "1 freeze\n1 freeze\n1 thaw\n"


@root
def test_hook_failures(workdir: str, loopfs: LoopFs) -> None:
    hook = os.path.join(workdir, "hook.sh")
    with open(hook, "w") as f:
        f.write("#!/bin/sh\n[ \"$1\" = thaw ] && { echo thaw-broken; exit 2; }\nexit 3\n")
    os.chmod(hook, 0o755)
    c = make_ctx(workdir, fsfreeze_hook=hook)
    with pytest.raises(QgaError) as info:
        fz.fsfreeze_freeze_list(c, [loopfs.mnt])
    assert info.value.desc == "child process has failed to execute fsfreeze hook: exit status 3"
    assert not c.frozen and Writer(loopfs.mnt).finishes()
    # A failing thaw hook: the error is reported, the filesystems are thawed anyway.
    c.registry.frozen = True
    with pytest.raises(QgaError) as info:
        fz.fsfreeze_thaw(c)
    assert info.value.desc == "child process has failed to execute fsfreeze hook: thaw-broken\n"
    assert not c.frozen
    missing = os.path.join(workdir, "no-such-hook")
    c = make_ctx(workdir, fsfreeze_hook=missing)
    with pytest.raises(QgaError) as info:
        fz.fsfreeze_freeze_list(c, [loopfs.mnt])
    assert info.value.desc == ("child process has failed to execute fsfreeze hook: "
                               f"failed to exec '{missing}': No such file or directory\n")
    # A hook that hangs is killed after fsfreeze-hook-timeout; nothing gets frozen.
    hung = os.path.join(workdir, "hung-hook.sh")
    with open(hung, "w") as f:
        f.write("#!/bin/sh\nsleep 60 &\nsleep 60\n")
    os.chmod(hung, 0o755)
    c = make_ctx(workdir, fsfreeze_hook=hung, fsfreeze_hook_timeout=0.5)
    with pytest.raises(QgaError) as info:  # without the timeout: the hook's exit 0 after 60 s
        fz.fsfreeze_freeze_list(c, [loopfs.mnt])
    assert info.value.desc == "child process has failed to execute fsfreeze hook: timed out after 0.5 seconds"
    assert not c.frozen and Writer(loopfs.mnt).finishes()


@root
def test_fstrim_on_loop_mount(ctx: Context, loopfs: LoopFs, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = [m for m in mounts_mod.list_mounts() if m.dirname == loopfs.mnt]
    assert len(mine) == 1
    monkeypatch.setattr(fz, "list_mounts", lambda: mine + [mounts_mod.Mount(
        "/nonexistent-mount", "ext4", 7, 99, "/dev/null")])
    os.sync()
    st = os.statvfs(loopfs.mnt)
    # xfs trims the free space again on every call: util-linux's FITRIM right
    # before ours reports the same length.  ext4 trims each free block once.
    before = _util_linux_trimmed(loopfs.mnt) if loopfs.fstype == "xfs" else None
    result = fz.fstrim(ctx, 0)
    assert result["paths"][0] == {"path": "/nonexistent-mount",
                                  "error": "failed to open: No such file or directory"}
    entry = result["paths"][1]
    assert list(entry) == ["path", "trimmed", "minimum"]
    if loopfs.fstype == "ext4":
        # A fresh ext4: every free block is trimmed once, the request's minimum is kept.
        assert entry == {"path": loopfs.mnt, "trimmed": st.f_bfree * st.f_frsize, "minimum": 0}
        assert fz.fstrim(ctx, 0)["paths"][1]["trimmed"] == 0
    else:
        # xfs raises the minimum to the device's discard granularity and reports it.
        queue = Path("/sys/block", os.path.basename(loopfs.dev), "queue")
        granularity = int((queue / "discard_granularity").read_text())
        assert entry == {"path": loopfs.mnt, "trimmed": before, "minimum": granularity}


def _util_linux_trimmed(mountpoint: str) -> int:
    """Bytes util-linux fstrim reports for ``mountpoint`` (``...: 1 MiB (1048576 bytes) trimmed``)."""
    out = subprocess.run(["fstrim", "-v", mountpoint], check=True, capture_output=True, text=True).stdout
    return int(out.rsplit("(", 1)[1].split()[0])


@root
def test_auto_thaw_and_shutdown_thaw_handlers(workdir: str, loopfs: LoopFs) -> None:
    import threading
    c = make_ctx(workdir, fsfreeze_timeout=0.5)
    thread = threading.Thread(target=c.loop.run, daemon=True)
    thread.start()
    try:
        assert fz.fsfreeze_freeze_list(c, [loopfs.mnt]) == 1
        deadline = time.monotonic() + 60
        while c.frozen:
            assert time.monotonic() < deadline, "fsfreeze-timeout did not thaw"
            time.sleep(0.05)
        assert Writer(loopfs.mnt).finishes()
        assert fz.fsfreeze_freeze_list(c, [loopfs.mnt]) == 1
        c.run_shutdown_hooks()  # the agent stopping while frozen thaws first
        assert not c.frozen and Writer(loopfs.mnt).finishes()
    finally:
        c.loop.call_soon_threadsafe(c.loop.stop)
        thread.join(5)
        if c.frozen:
            fz.do_thaw(c)


# -- the agent process ---------------------------------------------------------------------
def _agent(workdir: str, *extra: str) -> Any:
    return start("ours", extra=list(extra), tmpdir=workdir)


@root
def test_agent_sigkill_while_frozen_restarts_frozen(workdir: str, loopfs: LoopFs) -> None:
    agent = _agent(workdir)
    try:
        conn = agent.connect()
        conn.sync()
        assert conn.cmd("guest-fsfreeze-freeze-list", mountpoints=[loopfs.mnt]) == 1
        agent.stop(9)
        assert os.path.exists(os.path.join(workdir, "qga.state.isfrozen"))
        agent = _agent(workdir)
        conn = agent.connect()
        conn.sync()
        assert conn.cmd("guest-fsfreeze-status") == "frozen"
        reply = conn.request({"execute": "guest-file-open", "arguments": {"path": "/etc/hostname"}})
        assert reply["error"] == {"class": "CommandNotFound", "desc":
                                  "Command guest-file-open has been disabled: the command is not allowed"}
        assert conn.cmd("guest-fsfreeze-thaw") >= 1
        assert conn.cmd("guest-fsfreeze-status") == "thawed"
        assert not os.path.exists(os.path.join(workdir, "qga.state.isfrozen"))
        assert Writer(loopfs.mnt).finishes()
        assert agent.stop() == 0
    finally:
        agent.stop(9)


@root
def test_agent_fsfreeze_timeout(workdir: str, loopfs: LoopFs) -> None:
    agent = _agent(workdir, "--fsfreeze-timeout", "1")
    try:
        conn = agent.connect()
        conn.sync()
        assert conn.cmd("guest-fsfreeze-freeze-list", mountpoints=[loopfs.mnt]) == 1
        writer = Writer(loopfs.mnt)
        assert writer.finishes(), "the agent did not thaw by itself"
        assert conn.cmd("guest-fsfreeze-status") == "thawed"
        assert agent.stop() == 0
        assert "fsfreeze-timeout" in agent.log()
    finally:
        agent.stop(9)


@root
def test_agent_sigterm_while_frozen_thaws_then_exits(workdir: str, loopfs: LoopFs) -> None:
    agent = _agent(workdir)
    try:
        conn = agent.connect()
        conn.sync()
        assert conn.cmd("guest-fsfreeze-freeze-list", mountpoints=[loopfs.mnt]) == 1
        writer = Writer(loopfs.mnt)
        assert writer.blocked()
        assert agent.stop() == 0
        assert writer.finishes()
        assert not os.path.exists(os.path.join(workdir, "qga.state.isfrozen"))
    finally:
        agent.stop(9)


@root
def test_agent_sigterm_ignored_when_configured(workdir: str, loopfs: LoopFs) -> None:
    agent = _agent(workdir, "--frozen-sigterm", "ignore")
    try:
        conn = agent.connect()
        conn.sync()
        assert conn.cmd("guest-fsfreeze-freeze-list", mountpoints=[loopfs.mnt]) == 1
        agent.proc.send_signal(15)
        wait_signal_delivered(agent.pid, 15)
        # The delivered signal woke the loop before the first ping was sent, so its
        # handler ran by the time the loop reads the second: a stopping agent would
        # not answer it.  (The log cannot tell: it is held while frozen.)
        assert conn.cmd("guest-ping") == {}
        assert conn.cmd("guest-ping") == {}, "SIGTERM stopped a frozen agent despite frozen-sigterm=ignore"
        assert agent.proc.poll() is None
        assert conn.cmd("guest-fsfreeze-thaw") >= 1
        assert agent.stop() == 0
    finally:
        agent.stop(9)


def _is_frozen(path: str) -> bool:
    """FIFREEZE answers EBUSY on a frozen filesystem; a successful probe is undone at once."""
    fd = fs.open_mount(path)
    try:
        fs.freeze(fd)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return True
        raise
    else:
        fs.thaw_all_levels(fd)
        return False
    finally:
        os.close(fd)


@root
def test_freeze_all_leaves_excluded_mounts_alone(workdir: str, two_ext4: List[LoopFs],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    _need("mkfs.xfs")
    kept, globbed = two_ext4
    xfs = LoopFs("xfs", workdir)
    try:
        ours = {kept.mnt, globbed.mnt, xfs.mnt}
        # Freeze-all on this machine's real mount list, cut down to the test's loop
        # mounts: everything else (the root filesystem) must never be frozen.
        real = mounts_mod.list_mounts
        monkeypatch.setattr(fz, "list_mounts", lambda: [m for m in real() if m.dirname in ours])
        c = make_ctx(workdir, fsfreeze_exclude=[os.path.dirname(globbed.mnt) + "/*", "xfs"])
        try:
            assert fz.fsfreeze_freeze(c) == 1
            assert _is_frozen(kept.mnt)
            assert not _is_frozen(globbed.mnt) and not _is_frozen(xfs.mnt)
            assert Writer(globbed.mnt).finishes() and Writer(xfs.mnt).finishes()
        finally:
            fz.do_thaw(c)
        logged = [r.getMessage() for r in caplog.records if "fsfreeze-exclude" in r.getMessage()]
        assert logged == [f"guest-fsfreeze-freeze: not freezing {globbed.mnt} (ext4): fsfreeze-exclude "
                          f"entry '{os.path.dirname(globbed.mnt)}/*'",
                          f"guest-fsfreeze-freeze: not freezing {xfs.mnt} (xfs): fsfreeze-exclude entry 'xfs'"]
        # freeze-list freezes exactly what the host names, excluded or not.
        try:
            assert fz.fsfreeze_freeze_list(c, [globbed.mnt, xfs.mnt]) == 2
            assert _is_frozen(globbed.mnt) and _is_frozen(xfs.mnt) and not _is_frozen(kept.mnt)
        finally:
            fz.do_thaw(c)
    finally:
        xfs.cleanup()


def _boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _audit(agent: Any, message: str) -> Dict[str, str]:
    """The fields of the agent's first audit record ``message`` (waits for it to be written)."""
    pattern = re.compile(r" (\w+)=(\S+)")
    for _ in range(200):
        for line in agent.log().splitlines():
            if f": {message} " in line:
                return dict(pattern.findall(line))
        time.sleep(0.05)
    raise AssertionError(f"no audit record {message!r}: {agent.log()}")


@root
@pytest.mark.parametrize("restart", ["before-deadline", "after-deadline"])
def test_agent_restarted_while_frozen_thaws_at_the_original_deadline(workdir: str, private_ext4: PrivateExt4,
                                                                     restart: str) -> None:
    timeout = 8.0 if restart == "before-deadline" else 1.0
    argv = ["--fsfreeze-timeout", f"{timeout:g}"]
    agent = private_ext4.agent(workdir, *argv)
    try:
        conn = agent.connect()
        conn.sync()
        assert conn.cmd("guest-fsfreeze-freeze-list", mountpoints=[private_ext4.mnt]) == 1
        agent.stop(9)
        since_path = os.path.join(workdir, "qga.state.isfrozen.since")
        with open(since_path) as f:
            record = keyfile.parse(f.read())["freeze"]
        with open("/proc/sys/kernel/random/boot_id") as f:
            assert record["boot-id"] == f.read().strip()
        started = float(record["boottime"])
        assert os.path.getsize(os.path.join(workdir, "qga.state.isfrozen")) == 0  # qemu-ga's empty marker
        while restart == "after-deadline" and _boottime() <= started + timeout:
            time.sleep(0.1)  # the limit runs out while no agent is running
        assert _is_frozen(private_ext4.outside)
        agent = private_ext4.agent(workdir, *argv)
        writer = Writer(private_ext4.outside)
        assert writer.finishes(60), "the restarted agent never thawed"
        fields = _audit(agent, "fsfreeze auto-thaw")
        # The limit counts from the original freeze, not from the restart.
        assert float(fields["frozen_since"]) == started
        assert float(fields["deadline"]) == started + timeout
        assert float(fields["thawed_at"]) >= started + timeout
        assert fields["thawed"] == "1"
        assert FROZEN_AT_START.split(".", 1)[0] in agent.log()
        assert "fsfreeze-timeout" in agent.log()
        conn = agent.connect()
        conn.sync()
        assert conn.cmd("guest-fsfreeze-status") == "thawed"
        assert not os.path.exists(since_path)
        assert agent.stop() == 0
    finally:
        agent.stop(9)


@root
def test_restart_after_reboot_thaws_at_once(workdir: str, ext4fs: LoopFs) -> None:
    c = make_ctx(workdir)
    assert fz.fsfreeze_freeze_list(c, [ext4fs.mnt]) == 1
    c.loop.close()
    # The record as an earlier boot would have left it (its boot id differs).
    with open(c.state.since_path) as f:
        text = f.read()
    with open(c.state.since_path, "w") as f:
        f.write(re.sub(r"boot-id=.*", "boot-id=00000000-0000-0000-0000-000000000000", text))
    restarted = make_ctx(workdir, fsfreeze_timeout=3600)
    restarted.registry.frozen = True  # as the agent does when it finds the marker
    import threading
    thread = threading.Thread(target=restarted.loop.run, daemon=True)
    thread.start()
    try:
        assert Writer(ext4fs.mnt).finishes(), "an agent restarted after a reboot did not thaw at once"
    finally:
        restarted.loop.call_soon_threadsafe(restarted.loop.stop)
        thread.join(5)
        if restarted.frozen:
            fz.do_thaw(restarted)
    assert not restarted.frozen and not os.path.exists(restarted.state.since_path)


@root
def test_agent_reports_time_left_in_systemd_status(workdir: str, private_ext4: PrivateExt4) -> None:
    path = os.path.join(workdir, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    agent = private_ext4.agent(workdir, "--fsfreeze-timeout", "2", env={"NOTIFY_SOCKET": path})
    try:
        conn = agent.connect()
        conn.sync()
        assert conn.cmd("guest-fsfreeze-freeze-list", mountpoints=[private_ext4.mnt]) == 1
        seen: List[str] = []
        while not any("thawed automatically" in m for m in seen):
            seen.append(sock.recv(4096).decode())
        statuses = [m for m in seen if m.startswith("STATUS=")]
        assert any(re.fullmatch(r"STATUS=filesystems frozen; automatic thaw in [12] s \(fsfreeze-timeout\)", m)
                   for m in statuses), statuses
        assert statuses[-1] == "STATUS=filesystems thawed automatically after fsfreeze-timeout (2 s)"
        assert agent.stop() == 0
    finally:
        agent.stop(9)
        sock.close()


# -- hook hygiene ---------------------------------------------------------------------------
def _write_hook(path: str, record: str, mode: int = 0o755) -> None:
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\necho \"$1\" >> {record}\n")
    os.chmod(path, mode)


@root
@pytest.mark.parametrize("unsafe", ["foreign-owner", "group-writable", "other-writable"])
def test_unsafe_hook_is_refused_and_nothing_frozen(workdir: str, private_ext4: PrivateExt4, unsafe: str) -> None:
    hook, record = os.path.join(workdir, "hook.sh"), os.path.join(workdir, "hook.ran")
    _write_hook(hook, record, {"group-writable": 0o775, "other-writable": 0o757}.get(unsafe, 0o755))
    if unsafe == "foreign-owner":
        os.chown(hook, 65534, 65534)
    expected = {"foreign-owner": "owned by uid 65534, not root",
                "group-writable": "writable by group or others (mode 0775)",
                "other-writable": "writable by group or others (mode 0757)"}[unsafe]
    agent = private_ext4.agent(workdir, f"--fsfreeze-hook={hook}")
    try:
        conn = agent.connect()
        conn.sync()
        reply = conn.request({"execute": "guest-fsfreeze-freeze-list",
                              "arguments": {"mountpoints": [private_ext4.mnt]}})
        assert reply == {"error": {"class": "GenericError",
                                   "desc": f"refusing to run fsfreeze hook '{hook}': {expected}"}}
        assert conn.cmd("guest-fsfreeze-status") == "thawed"
        assert not _is_frozen(private_ext4.outside) and not os.path.exists(record)
        assert agent.stop() == 0
    finally:
        agent.stop(9)


def test_self_test_flags_an_unsafe_hook(workdir: str) -> None:
    hook = os.path.join(workdir, "hook.sh")
    _write_hook(hook, os.devnull, 0o777)
    test = SelfTest(Config(method="unix-listen", path=os.path.join(workdir, "s"), statedir=workdir,
                           fsfreeze_hook=hook))
    test.check_files()
    assert test.results == [("FAIL", f"fsfreeze hook {hook}",
                              "would be refused: writable by group or others (mode 0777)")]


# -- the stock hook script ----------------------------------------------------------------
def _stock_hook(workdir: str, scripts: Dict[str, str]) -> Path:
    etc = Path(workdir) / "etc"
    hookd = etc / "fsfreeze-hook.d"
    hookd.mkdir(parents=True)
    hook = etc / "fsfreeze-hook"
    shutil.copy(REPO / "packaging" / "fsfreeze-hook", hook)
    for name, body in scripts.items():
        script = hookd / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    return hook


def _run_stock_hook(hook: Path, action: str, log: Path, **env: str) -> None:
    # A bound, not a measurement: the old hook waited for a hung script forever.
    result = subprocess.run([str(hook), action], capture_output=True, timeout=60,
                            env=dict(os.environ, QGA_FSFREEZE_HOOK_LOG=str(log), **env))
    assert result.returncode == 0, result


@root
def test_stock_hook_order_failures_and_skips(workdir: str) -> None:
    record = Path(workdir) / "ran"
    hook = _stock_hook(workdir, {
        "10-ok": f"echo ok-$1 >> {record}; echo said-$1",
        "20-fail": f"echo fail-$1 >> {record}; [ $1 = thaw ] || exit 9",
        "30-last": f"echo last-$1 >> {record}",
        "30-skip.sample": f"echo sample >> {record}", "40-skip.rpmsave": f"echo rpmsave >> {record}",
        "50-skip.dpkg-old": f"echo dpkg >> {record}", "60-skip~": f"echo tilde >> {record}"})
    (hook.parent / "fsfreeze-hook.d" / "70-not-executable").write_text(f"#!/bin/sh\necho noexec >> {record}\n")
    log = Path(workdir) / "hook.log"
    _run_stock_hook(hook, "freeze", log)
    _run_stock_hook(hook, "thaw", log)
    # Name order on freeze, reverse on thaw; the failed script's thaw half runs too.
    assert record.read_text().split() == ["ok-freeze", "fail-freeze", "last-freeze",
                                          "last-thaw", "fail-thaw", "ok-thaw"]
    text = log.read_text()
    hookd = hook.parent / "fsfreeze-hook.d"
    for line in (f"info: {hookd}/10-ok freeze: said-freeze", f"info: {hookd}/10-ok freeze: ok",
                 f"err: {hookd}/20-fail freeze: failed with status 9", f"info: {hookd}/20-fail thaw: ok"):
        assert line in text, text
    assert stat.S_IMODE(os.stat(REPO / "packaging" / "fsfreeze-hook").st_mode) & 0o111


@root
def test_stock_hook_refuses_unsafe_scripts_and_limits_each(workdir: str) -> None:
    record = Path(workdir) / "ran"
    hook = _stock_hook(workdir, {
        "10-hangs": f"echo hang-$1 >> {record}; sleep 300 & sleep 300",
        "20-foreign": f"echo foreign >> {record}", "30-groupw": f"echo groupw >> {record}",
        "40-after": f"echo after-$1 >> {record}"})
    hookd = hook.parent / "fsfreeze-hook.d"
    os.chown(hookd / "20-foreign", 65534, 65534)
    (hookd / "30-groupw").chmod(0o775)
    log = Path(workdir) / "hook.log"
    _run_stock_hook(hook, "freeze", log, QGA_FSFREEZE_HOOK_SCRIPT_TIMEOUT="1")
    assert record.read_text().split() == ["hang-freeze", "after-freeze"]
    text = log.read_text()
    for line in (f"err: {hookd}/10-hangs freeze: killed after the time limit of 1 s",
                 f"err: {hookd}/20-foreign freeze: refused: owned by uid 65534, not root",
                 f"err: {hookd}/30-groupw freeze: refused: writable by group or others (mode 775)",
                 f"info: {hookd}/40-after freeze: ok"):
        assert line in text, text


@root
def test_stock_hook_logs_to_the_journal_when_there_is_one(workdir: str) -> None:
    _need("unshare")
    hook = _stock_hook(workdir, {"10-ok": "echo hello-$1", "20-fail": "exit 3"})
    hookd = hook.parent / "fsfreeze-hook.d"
    bindir, journal = Path(workdir) / "bin", Path(workdir) / "journal"
    bindir.mkdir()
    fake = bindir / "systemd-cat"  # records its arguments and what it was given to log
    fake.write_text(f'#!/bin/sh\n{{ echo "$*"; cat; }} >> {journal}\n')
    fake.chmod(0o755)
    # A journal socket exists only in a private mount namespace, on a tmpfs over its /run.
    bind = "import socket; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).bind('/run/systemd/journal/socket')"
    script = (f"mount -t tmpfs qga-test-run /run && mkdir -p /run/systemd/journal && "
              f"{sys.executable} -c \"{bind}\" && exec {hook} freeze")
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    env.pop("QGA_FSFREEZE_HOOK_LOG", None)
    subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                   env=env, check=True, timeout=60)
    assert journal.read_text().splitlines() == [
        "-t qemu-ga-fsfreeze-hook -p info", f"{hookd}/10-ok freeze: hello-freeze",
        "-t qemu-ga-fsfreeze-hook -p info", f"{hookd}/10-ok freeze: ok",
        "-t qemu-ga-fsfreeze-hook -p err", f"{hookd}/20-fail freeze: failed with status 3"]


# -- no deadline, hook timeouts ---------------------------------------------------------------
def _sleeping_hook(path: str, record: str, seconds: float) -> None:
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\necho \"$1 start\" >> {record}\nsleep {seconds}\necho \"$1 done\" >> {record}\n")
    os.chmod(path, 0o755)


@root
def test_freeze_and_thaw_outlast_the_command_timeout(workdir: str, private_ext4: PrivateExt4) -> None:
    """README: freeze and thaw have no deadline; a 2 s hook under --command-timeout 1 still completes."""
    hook, record = os.path.join(workdir, "hook.sh"), os.path.join(workdir, "hook.ran")
    _sleeping_hook(hook, record, 2)
    agent = private_ext4.agent(workdir, "--command-timeout", "1", f"--fsfreeze-hook={hook}")
    try:
        conn = agent.connect(timeout=30)
        conn.sync()
        assert conn.cmd("guest-fsfreeze-freeze-list", mountpoints=[private_ext4.mnt]) == 1
        assert _is_frozen(private_ext4.outside)
        assert conn.cmd("guest-fsfreeze-thaw") == 1
        assert not _is_frozen(private_ext4.outside)
        assert open(record).read() == "freeze start\nfreeze done\nthaw start\nthaw done\n"
        assert conn.request({"execute": "guest-ping", "id": 1}) == {"return": {}, "id": 1}
        assert agent.stop() == 0
    finally:
        agent.stop(9)


@root
def test_fsfreeze_hook_timeout_0_waits_for_the_hook(workdir: str, private_ext4: PrivateExt4) -> None:
    """README: fsfreeze-hook-timeout=0 waits forever, like qemu-ga (here: a 3 s hook)."""
    hook, record = os.path.join(workdir, "hook.sh"), os.path.join(workdir, "hook.ran")
    _sleeping_hook(hook, record, 3)
    conf = os.path.join(workdir, "qga.conf")
    with open(conf, "w") as f:
        f.write(f"[general]\nfsfreeze-hook={hook}\nfsfreeze-hook-timeout=0\n")
    agent = private_ext4.agent(workdir, "-c", conf)
    try:
        conn = agent.connect(timeout=30)
        conn.sync()
        assert conn.cmd("guest-fsfreeze-freeze-list", mountpoints=[private_ext4.mnt]) == 1
        assert open(record).read() == "freeze start\nfreeze done\n"
        assert conn.cmd("guest-fsfreeze-thaw") == 1
        assert agent.stop() == 0
    finally:
        agent.stop(9)


def _gone(pid: int) -> bool:
    """Exited (reaped, or a zombie waiting for its new parent)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@root
@pytest.mark.parametrize("child", ["same-group", "own-group"])
def test_hung_hook_is_killed_with_its_whole_session(workdir: str, ext4fs: LoopFs, child: str) -> None:
    """README: a hung hook's whole session goes, background children included, even one in a
    process group of its own (timeout(1), as the stock hook uses, makes one)."""
    bg = os.path.join(workdir, "bg.pid")
    hung = os.path.join(workdir, "hung-hook.sh")
    with open(hung, "w") as f:
        f.write("#!/bin/sh\n" + ("timeout 60 " if child == "own-group" else "") +
                f"sleep 60 >/dev/null 2>&1 &\necho $! > {bg}\nsleep 60\n")
    os.chmod(hung, 0o755)
    c = make_ctx(workdir, fsfreeze_hook=hung, fsfreeze_hook_timeout=0.5)
    with pytest.raises(QgaError) as info:
        fz.fsfreeze_freeze_list(c, [ext4fs.mnt])
    assert info.value.desc == "child process has failed to execute fsfreeze hook: timed out after 0.5 seconds"
    assert not c.frozen
    pid = int(open(bg).read())
    deadline = time.monotonic() + 10
    while not _gone(pid):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            raise AssertionError(f"the hook's background child {pid} survived the hook's timeout")
        time.sleep(0.05)


@root
def test_bind_mount_is_not_frozen_twice(ctx: Context, ext4fs: LoopFs, workdir: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """README / qemu-ga 10.2: a bind mount is the filesystem it shows, listed once (first mount wins):
    freeze-list of the bind mount alone freezes nothing (0; qemu-ga 7.2 gives 1)."""
    bind = os.path.join(workdir, "bind")
    os.mkdir(bind)
    subprocess.run(["mount", "--bind", ext4fs.mnt, bind], check=True, capture_output=True)
    try:
        listed = [m.dirname for m in mounts_mod.list_mounts()]
        assert ext4fs.mnt in listed and bind not in listed
        assert fz.fsfreeze_freeze_list(ctx, [bind]) == 0 and not ctx.frozen
        assert fz.fsfreeze_freeze_list(ctx, [ext4fs.mnt, bind, ext4fs.mnt]) == 1
        try:
            assert _is_frozen(bind)  # the same filesystem
        finally:
            assert fz.fsfreeze_thaw(ctx) >= 1
        real = mounts_mod.list_mounts
        monkeypatch.setattr(fz, "list_mounts", lambda: [m for m in real() if m.dirname in (ext4fs.mnt, bind)])
        try:
            assert fz.fsfreeze_freeze(ctx) == 1  # freeze-all cut down to these two
        finally:
            fz.do_thaw(ctx)
    finally:
        _thaw_path(bind)
        subprocess.run(["umount", bind], capture_output=True)


@root
def test_log_on_the_frozen_filesystem_is_held_until_the_thaw(workdir: str, private_ext4: PrivateExt4) -> None:
    """README: logging while frozen is held in memory and written after the thaw; a log file on the
    frozen filesystem would otherwise block the agent in its first write."""
    logfile = os.path.join(private_ext4.mnt, "agent.log")  # the path inside the namespace
    agent = private_ext4.agent(workdir, "-l", logfile, "-v")
    try:
        conn = agent.connect()
        conn.sync()
        assert conn.cmd("guest-fsfreeze-freeze-list", mountpoints=[private_ext4.mnt]) == 1
        for rid in range(3):  # each logs (-v) while frozen: answered all the same
            assert conn.request({"execute": "guest-fsfreeze-status", "id": rid}, 5) == \
                {"return": "frozen", "id": rid}
        outside = os.path.join(private_ext4.outside, "agent.log")
        assert "running guest-fsfreeze-status" not in open(outside).read()
        assert conn.cmd("guest-fsfreeze-thaw") == 1
        assert agent.stop() == 0
        written = open(outside).read()
        assert written.count("running guest-fsfreeze-status") == 3, written
        assert "audit: guest-fsfreeze-freeze-list" in written, written
    finally:
        _thaw_path(private_ext4.outside)  # an agent stuck writing to the frozen log could not be killed
        agent.stop(9)
