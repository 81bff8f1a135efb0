"""fsfreeze/thaw/fstrim on loop-mounted ext4 and xfs images (needs root).

Only test mounts are ever frozen: every freeze uses freeze-list with the test
mount points (a plain guest-fsfreeze-freeze would freeze this machine's own
filesystems).  Thaw is harmless elsewhere (FITHAW on a thawed filesystem
fails with EINVAL and is not counted).  Fixtures always thaw, unmount and
detach, even when a test fails.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from qga.commands import freeze as fz
from qga.commands import files
from qga.config import Config
from qga.context import Context
from qga.errors import QgaError
from qga.linux import fsfreeze as fs
from qga.linux import mounts as mounts_mod
from qga.loop import Loop
from qga.registry import Registry
from qga.state import StateDir
from tests.agentproc import start
from tests.hardening.util import wait_signal_delivered

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
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")


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
    return Context(Config(**config), state, Loop(), Registry([]))


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


# -- the stock hook script (no root needed) ------------------------------------------------
def test_stock_hook_script(workdir: str) -> None:
    etc = Path(workdir) / "etc"
    hookd = etc / "fsfreeze-hook.d"
    hookd.mkdir(parents=True)
    hook = etc / "fsfreeze-hook"
    shutil.copy(REPO / "packaging" / "fsfreeze-hook", hook)
    record = Path(workdir) / "ran"
    for name, body in [("10-ok", f"echo ok-$1 >> {record}"), ("20-fail", f"echo fail-$1 >> {record}; exit 9"),
                       ("30-skip.sample", f"echo sample >> {record}"),
                       ("40-skip.rpmsave", f"echo rpmsave >> {record}"),
                       ("50-skip.dpkg-old", f"echo dpkg >> {record}"), ("60-skip~", f"echo tilde >> {record}")]:
        script = hookd / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    (hookd / "70-not-executable").write_text(f"#!/bin/sh\necho noexec >> {record}\n")
    log = Path(workdir) / "hook.log"
    result = subprocess.run([str(hook), "freeze"], capture_output=True,
                            env=dict(os.environ, QGA_FSFREEZE_HOOK_LOG=str(log)))
    assert result.returncode == 0
    assert record.read_text() == "ok-freeze\nfail-freeze\n"
    text = log.read_text()
    assert "10-ok freeze" in text and "20-fail finished with status 9" in text
    assert stat.S_IMODE(os.stat(REPO / "packaging" / "fsfreeze-hook").st_mode) & 0o111
