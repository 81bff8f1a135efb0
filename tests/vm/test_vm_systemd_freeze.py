"""Freezes that cannot hurt the guest (issue 14), shown in the systemd guest.

Each scenario runs against qemu-ga-py.service and, in the same guest, against
Debian's qemu-ga 7.2 (qemu-guest-agent.service; the two units conflict, so
starting one stops the other). What each agent did is recorded in
``outcome.json`` under the test's tmp dir, printed, and repeated in the
assertion messages; only qemu-ga-py's outcome is asserted.

The guest is conftest's session ``sd`` (after test_vm_systemd.py). qemu-ga-py
gets ``/etc/sysconfig/qemu-ga-py`` (a short fsfreeze-timeout, the xfs data disk
excluded, the shipped ``packaging/fsfreeze-hook``, a short hook limit); qemu-ga
gets a drop-in enabling its stock ``/etc/qemu/fsfreeze-hook`` (and a 30 s stop timeout). Both hooks run
the scripts of ``/etc/qemu/fsfreeze-hook.d`` (the hook test installs
``guest/freeze/hang.sh`` there, which hangs on request). While frozen neither agent runs guest-exec, so what must
happen then (a writer, a kill -9, a poweroff) is scheduled beforehand as a
transient systemd unit (``guest/freeze/act.sh``, ``writer.sh``) and reports
on the serial console with the guest's uptime (CLOCK_BOOTTIME, the clock the
agent's freeze records use).

The last test powers the shared guest off (with qemu-ga frozen in it); a
second systemd guest for qemu-ga-py's poweroff boots meanwhile, started in the
background once the kill -9 test no longer needs the host's CPUs for timing.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest

from tests.prereq import require
from tests.vm import sdguest, vmlib
from tests.vm.sdguest import GUEST_PYTHON, REF_UNIT, UNIT, SdGuest

pytestmark = pytest.mark.vm

TIMEOUT = 25        # qemu-ga-py's fsfreeze-timeout here
# Each process the hook starts costs up to ~0.5 s under TCG on a loaded host (systemd-cat
# several seconds): the limits leave room for that.
SCRIPT_LIMIT = 5    # QGA_FSFREEZE_HOOK_SCRIPT_TIMEOUT: each hook.d script's limit
HOOK_LIMIT = 20     # fsfreeze-hook-timeout
HANG_LIMIT = 300.0  # a poweroff taking longer than this counts as hung
C_HOOK_RELEASE = 12  # seconds after which the test itself ends qemu-ga's hanging hook
# qemu-ga ignores SIGTERM while frozen: systemd waits this long before SIGKILL (Debian's
# unit has the default, 90 s; shortened to keep the tier's time down).
C_STOP_TIMEOUT = 30
HELPERS = vmlib.REPO_ROOT / "tests" / "vm" / "guest" / "freeze"
HOOK_DIR = "/etc/qemu/fsfreeze-hook.d"
HANG_FILE = "/run/qga-vm/hook-hang"
SRC = "/tmp/qga-freeze-src.bin"
EXE = {"py": os.path.realpath(GUEST_PYTHON), "c": "/usr/sbin/qemu-ga"}
AGENT_UNIT = {"py": UNIT, "c": REF_UNIT}
NAME = {"py": "qemu-ga-py", "c": "qemu-ga 7.2"}
PY_SYSCONFIG = (f'QGA_ARGS="--fsfreeze-timeout={TIMEOUT} --fsfreeze-exclude={vmlib.MNT_XFS} '
                f'--fsfreeze-hook=/etc/qemu-ga-py/fsfreeze-hook --fsfreeze-hook-timeout={HOOK_LIMIT}"\n'
                f"QGA_FSFREEZE_HOOK_SCRIPT_TIMEOUT={SCRIPT_LIMIT}\n")
C_DROPIN = f"[Service]\nExecStart=\nExecStart=-/usr/sbin/qemu-ga -F\nTimeoutStopSec={C_STOP_TIMEOUT}s\n"

WRITER_RX = (r"qga-vm-writer: {tag} done {dest} t=(?P<t>[\d.]+) rc=(?P<rc>\d+) "
             r"sha256=(?P<sha>[0-9a-f]+)")
ACT_RX = r"qga-vm-act: {act} t=(?P<t>[\d.]+)(?: pid=(?P<pid>\d+))?"


class Outcome:
    """What each agent did in one scenario: outcome.json, stdout and assertion messages."""

    def __init__(self, tmp_path: Path, scenario: str) -> None:
        self.path = tmp_path / "outcome.json"
        self.data: Dict[str, Any] = {"scenario": scenario}

    def put(self, agent: str, facts: Dict[str, Any]) -> Dict[str, Any]:
        self.data[NAME.get(agent, agent)] = facts
        self.path.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n")
        return facts

    def reference(self, agent: str, run: Any) -> None:
        """Record qemu-ga's outcome; its failures are facts, never test failures."""
        try:
            self.put(agent, run())
        except Exception as e:  # noqa: BLE001 - anything qemu-ga does is an outcome
            self.put(agent, {"error": f"{type(e).__name__}: {e}"[:2000]})

    def __str__(self) -> str:
        return json.dumps(self.data, indent=1, sort_keys=True)

    def show(self) -> None:
        print(f"\n{self.data['scenario']} outcome ({self.path}):\n{self}")


class Scheduler:
    """Transient units that act while the agent refuses guest-exec (frozen)."""

    # Unit names stay unique in a guest: a failed transient unit stays loaded.
    names = itertools.count(1)

    def __init__(self, sd: SdGuest) -> None:
        self.sd = sd

    def at(self, delay: float, *argv: str) -> float:
        """Run ``argv`` ``delay`` s from now (systemd-run timer); returns the guest uptime now."""
        words = " ".join(argv)
        out = self.sd.sh(f"systemd-run --quiet --on-active={delay:g} --unit=qga-vm-fz{next(self.names)} "
                         f"{words} && cut -d' ' -f1 /proc/uptime")
        return float(out.split()[-1])


def uptime(sd: SdGuest) -> float:
    return float(sd.sh("cut -d' ' -f1 /proc/uptime"))


def use(sd: SdGuest, agent: str) -> None:
    """Make ``agent`` ("py" or "c") the one answering on the port."""
    if sd.sh("readlink /proc/$PPID/exe").strip() == EXE[agent]:
        return
    # From a transient timer: the exec child dies with the agent being stopped.
    sd.sh(f"systemd-run --quiet --on-active=1 systemctl start {AGENT_UNIT[agent]}")
    deadline = time.monotonic() + 90
    while True:
        time.sleep(1)
        sd.g.detach_agent()
        try:
            if sd.sh("readlink /proc/$PPID/exe").strip() == EXE[agent]:
                return
        except (vmlib.GuestError, vmlib.AgentError, AssertionError, TimeoutError, EOFError, OSError):
            pass
        assert time.monotonic() < deadline, f"{NAME[agent]} did not take over the port in 90 s"


def status(sd: SdGuest) -> str:
    return sd.agent().execute("guest-fsfreeze-status")


def wait_thawed(sd: SdGuest, timeout: float) -> float:
    """Poll guest-fsfreeze-status until "thawed"; returns the host time it was first seen."""
    deadline = time.monotonic() + timeout
    while status(sd) != "thawed":
        assert time.monotonic() < deadline, f"still frozen after {timeout:.0f} s"
        time.sleep(0.5)
    return time.monotonic()


def writer_done(sd: SdGuest, tag: str, dest: str, start: int, timeout: float) -> Dict[str, Any]:
    m = sd.g.wait_console(WRITER_RX.format(tag=re.escape(tag), dest=re.escape(dest)), timeout, start)
    return {"t": float(m["t"]), "rc": int(m["rc"]), "sha256": m["sha"]}


def writer_seen(sd: SdGuest, tag: str, dest: str, start: int) -> bool:
    rx = WRITER_RX.format(tag=re.escape(tag), dest=re.escape(dest))
    return re.search(rx, sd.g.console()[start:]) is not None


def sha256(sd: SdGuest, path: str) -> str:
    """The file's sha256 as read back from the disk (page cache dropped)."""
    return sd.sh(f"sync; echo 3 > /proc/sys/vm/drop_caches; sha256sum < {path}").split()[0]


def install_helpers(sd: SdGuest) -> None:
    """The scheduled helpers and the writers' source, in any systemd guest."""
    missing = sd.sh("for t in fsfreeze setsid timeout sha256sum systemd-cat; do "
                    "command -v $t > /dev/null || echo $t; done").split()
    require(f"the guest's root (the host's /) lacks {', '.join(missing)}" if missing else None)
    sd.sh(f"install -m 755 {HELPERS}/act.sh {HELPERS}/writer.sh /run/qga-vm/ && mkdir -p {HOOK_DIR} && "
          f"head -c 3M /dev/urandom > {SRC}")


class BackgroundBoot:
    """A second systemd guest booting in a thread while the shared one waits on timeouts."""

    def __init__(self, artifacts: vmlib.Artifacts) -> None:
        self.artifacts = artifacts
        self.guest: Optional[SdGuest] = None
        self.error: Optional[BaseException] = None
        self.thread: Optional[threading.Thread] = None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._boot, name="systemd-poweroff-boot", daemon=True)
            self.thread.start()

    def _boot(self) -> None:
        try:
            # Generous: this boot competes with the shared guest for the host's CPUs.
            self.guest = sdguest.boot(self.artifacts, name="systemd-poweroff",
                                      timeout=max(sdguest.BOOT_TIMEOUT, 300))
        except BaseException as e:  # noqa: BLE001 - re-raised by get()
            self.error = e

    def get(self) -> SdGuest:
        """The booted guest (starting the boot now if nothing did)."""
        self.start()
        assert self.thread is not None
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.guest is not None
        return self.guest

    def close(self) -> None:
        if self.thread is not None:
            self.thread.join()
        if self.guest is not None:
            self.guest.g.close()


@pytest.fixture(scope="module")
def second_guest(vm_artifacts: vmlib.Artifacts) -> Iterator[BackgroundBoot]:
    """qemu-ga-py's poweroff guest, booted in the background from the kill -9 test on."""
    b = BackgroundBoot(vm_artifacts)
    yield b
    b.close()


@pytest.fixture(scope="module")
def fz(sd: SdGuest) -> SdGuest:
    """The shared guest set up for freezing, qemu-ga-py restarted with the test config."""
    use(sd, "py")
    install_helpers(sd)
    sd.sh("mkdir -p /etc/qemu-ga-py /etc/systemd/system/qemu-guest-agent.service.d && "
          f"install -m 755 {vmlib.REPO_ROOT}/packaging/fsfreeze-hook /etc/qemu-ga-py/fsfreeze-hook && "
          f"ln -sfn {HOOK_DIR} /etc/qemu-ga-py/fsfreeze-hook.d && "
          f"printf '%s' '{PY_SYSCONFIG}' > /etc/sysconfig/qemu-ga-py && "
          f"printf '%s' '{C_DROPIN}' > /etc/systemd/system/qemu-guest-agent.service.d/qga-vm-hook.conf && "
          "systemctl daemon-reload")
    old = int(sd.show(UNIT, "MainPID")["MainPID"])
    off = sd.offset()
    sd.sh(f"systemd-run --quiet --on-active=1 systemctl restart {UNIT}")
    m = sd.wait_mon(lambda m: m.active == "active" and m.port and m.pid not in (0, old), off,
                    "qemu-ga-py restarted with the freeze config")
    sd.g.detach_agent()
    cmd = sd.agent().read_file(f"/proc/{m.pid}/cmdline").split(b"\0")
    assert f"--fsfreeze-timeout={TIMEOUT}".encode() in cmd, cmd
    return sd


# --------------------------------------------------------------------------------------


def _exclude_run(sd: SdGuest, sched: Scheduler, agent: str) -> Dict[str, Any]:
    """freeze-all; a writer on each data disk starts 2 s later; thaw once the xfs one is done
    (or, when it is blocked, after 10 s). Writer times are guest uptime."""
    use(sd, agent)
    tag = f"excl-{agent}"
    xfs, ext4 = f"{vmlib.MNT_XFS}/{tag}.bin", f"{vmlib.MNT_EXT4}/{tag}.bin"
    off = sd.offset()
    sched.at(2, "/run/qga-vm/writer.sh", tag, SRC, xfs, ext4)
    t0 = time.monotonic()
    frozen = sd.agent().execute("guest-fsfreeze-freeze", timeout=60)
    f: Dict[str, Any] = {"frozen": frozen}
    try:
        f["xfs writer while frozen"] = writer_done(sd, tag, xfs, off, 10)
        f["xfs writer done after freeze s"] = round(time.monotonic() - t0, 1)
    except vmlib.GuestError:
        f["xfs writer while frozen"] = "blocked for the 10 s the freeze lasted"
    f["status at that point"] = status(sd)
    f["ext4 writer done while frozen"] = writer_seen(sd, tag, ext4, off)
    f["thawed"] = sd.agent().execute("guest-fsfreeze-thaw", timeout=60)
    f["thaw answered by t"] = uptime(sd)
    for name, dest in (("xfs", xfs), ("ext4", ext4)):
        f[f"{name} writer"] = writer_done(sd, tag, dest, off, 60)
    for name, dest in (("xfs", xfs), ("ext4", ext4)):
        f[f"{name} writer"]["intact"] = sha256(sd, dest) == f[f"{name} writer"]["sha256"] == sha256(sd, SRC)
    return f


def test_freeze_all_leaves_excluded_mount_writable(fz: SdGuest, tmp_path: Path) -> None:
    """fsfreeze-exclude: the xfs data disk stays writable while freeze-all holds the ext4 one."""
    out = Outcome(tmp_path, "freeze-all with an excluded mount")
    sched = Scheduler(fz)
    py = out.put("py", _exclude_run(fz, sched, "py"))
    recs = fz.journal(f"_SYSTEMD_UNIT={UNIT}", "PRIORITY=4")
    py["exclusion warnings"] = [r["MESSAGE"] for r in recs if "fsfreeze-exclude" in r.get("MESSAGE", "")][-1:]
    out.put("py", py)
    out.reference("c", lambda: _exclude_run(fz, sched, "c"))
    out.show()
    assert py["frozen"] == 1, f"freeze-all should freeze only the ext4 disk\n{out}"
    w = py["xfs writer while frozen"]
    assert isinstance(w, dict) and w["rc"] == 0, f"the excluded xfs was not writable while frozen\n{out}"
    assert py["status at that point"] == "frozen" and not py["ext4 writer done while frozen"], \
        f"the ext4 disk was not frozen while the xfs writer ran\n{out}"
    assert py["xfs writer"]["intact"] and py["ext4 writer"]["intact"], str(out)
    assert any(vmlib.MNT_XFS in m for m in py["exclusion warnings"]), str(out)


# --------------------------------------------------------------------------------------

SYNC_ID = 987654321


def _freeze_with_probe(sd: SdGuest, timeout: float) -> Dict[str, Any]:
    """guest-fsfreeze-freeze, then 2 s later a guest-sync: when is each one answered?"""
    c = sd.agent()
    t0 = time.monotonic()
    c.send_no_reply("guest-fsfreeze-freeze")
    time.sleep(2)
    c.send_no_reply("guest-sync", {"id": SYNC_ID})
    got: Dict[str, Any] = {}
    while "freeze" not in got or "sync" not in got:
        left = t0 + timeout - time.monotonic()
        try:
            resp = c.recv(max(0.1, left))
        except TimeoutError:
            got["unanswered after s"] = timeout
            sd.g.detach_agent()  # late replies must not reach the next command
            return got
        key = "sync" if resp.get("return") == SYNC_ID else "freeze"
        got[key] = resp.get("return", resp.get("error"))
        got[f"{key} answered after s"] = round(time.monotonic() - t0, 1)
    return got


def _hook_lines(sd: SdGuest, start: int) -> list:
    return re.findall(r"qga-vm-hook: \S+ \w+ (?:start|end) t=[\d.]+", sd.g.console()[start:])


def _leftover_hook_processes(sd: SdGuest) -> list:
    return [line.strip() for line in sd.sh("ps -eo pid,pgid,sid,args").splitlines()
            if "51-hang" in line and "ps -eo" not in line]


def _hook_py(sd: SdGuest) -> Dict[str, Any]:
    use(sd, "py")
    f: Dict[str, Any] = {}
    # A hook.d script hangs: the shipped hook kills it after its own limit and exits 0.
    sd.sh(f"echo 51-hang > {HANG_FILE}")
    off = sd.offset()
    one = f["a script hangs"] = _freeze_with_probe(sd, HOOK_LIMIT + 40)
    one["status"] = status(sd)
    one["thawed"] = sd.agent().execute("guest-fsfreeze-thaw", timeout=60)
    one["hook lines"] = _hook_lines(sd, off)
    one["hook journal"] = [r["MESSAGE"] for r in sd.journal("SYSLOG_IDENTIFIER=qemu-ga-fsfreeze-hook")
                           if "51-hang freeze" in r.get("MESSAGE", "")][-1:]
    # A script leaves a process holding its output open: the hook itself hangs waiting
    # for that output, beyond any per-script limit, until fsfreeze-hook-timeout.
    sd.sh(f"echo '51-hang detach' > {HANG_FILE}")
    off = sd.offset()
    hung = f["the hook hangs"] = _freeze_with_probe(sd, HOOK_LIMIT + 40)
    hung["status"] = status(sd)
    hung["hook processes left"] = _leftover_hook_processes(sd)
    hung["ext4 writable"] = sd.sh(f"echo probe > {vmlib.MNT_EXT4}/hook-probe && sync -f "
                                   f"{vmlib.MNT_EXT4}/hook-probe && echo yes").strip() == "yes"
    hung["guest-info answered"] = "version" in sd.agent().execute("guest-info")
    hung["hook lines"] = _hook_lines(sd, off)
    sd.sh(f"rm -f {HANG_FILE}")
    return f


def _hook_c(sd: SdGuest, sched: Scheduler) -> Dict[str, Any]:
    use(sd, "c")
    sd.sh(f"echo 51-hang > {HANG_FILE}")
    off = sd.offset()
    # qemu-ga has no limit: the test ends the hang itself after C_HOOK_RELEASE s.
    sched.at(C_HOOK_RELEASE, "/bin/rm", "-f", HANG_FILE)
    f = _freeze_with_probe(sd, C_HOOK_RELEASE + 40)
    f["released by the test after s"] = C_HOOK_RELEASE
    f["status"] = status(sd)
    if f["status"] == "frozen":
        f["thawed"] = sd.agent().execute("guest-fsfreeze-thaw", timeout=60)
    f["hook lines"] = _hook_lines(sd, off)
    return f


def test_hung_hook_is_cut_off(fz: SdGuest, tmp_path: Path) -> None:
    """A hanging fsfreeze-hook.d script: cut off by the shipped hook's per-script limit (the
    freeze goes on); a hook hanging beyond that: cut off by fsfreeze-hook-timeout (the freeze
    fails, nothing stays frozen, the agent answers)."""
    out = Outcome(tmp_path, "a freeze hook that hangs")
    sched = Scheduler(fz)
    # Only here: a script makes each freeze and thaw seconds slower under TCG.
    fz.sh(f"install -m 755 {HELPERS}/hang.sh {HOOK_DIR}/51-hang")
    try:
        # qemu-ga first: it is the unit left running by the previous test.
        out.reference("c", lambda: _hook_c(fz, sched))
        py = out.put("py", _hook_py(fz))
    finally:
        fz.sh(f"rm -f {HOOK_DIR}/51-hang {HANG_FILE}")
        out.show()
    one, hung = py["a script hangs"], py["the hook hangs"]
    # README: the stock hook kills a script after its limit and always exits 0: the freeze goes on.
    assert one.get("freeze") == 1 and one["status"] == "frozen" and one["thawed"] == 1, str(out)
    assert any(f"killed after the time limit of {SCRIPT_LIMIT} s" in m for m in one["hook journal"]), \
        str(out)
    # README: a hook still running after fsfreeze-hook-timeout is killed, the freeze fails.
    err = hung.get("freeze")
    assert isinstance(err, dict) and "timed out" in err.get("desc", ""), \
        f"the hung hook did not fail the freeze\n{out}"
    assert hung["status"] == "thawed" and hung["ext4 writable"], f"something stayed frozen\n{out}"
    assert "sync" in hung and hung["guest-info answered"], f"later commands not answered\n{out}"


# --------------------------------------------------------------------------------------


def _auto_thaw_record(sd: SdGuest) -> Optional[Dict[str, Any]]:
    recs = [r for r in sd.journal(f"_SYSTEMD_UNIT={UNIT}") if "QGA_DEADLINE" in r]
    return recs[-1] if recs else None


def _kill9_run(sd: SdGuest, sched: Scheduler, agent: str) -> Dict[str, Any]:
    """Freeze-all; 4 s later a writer on the ext4 disk (blocks); 8 s later kill -9 the agent."""
    use(sd, agent)
    unit = AGENT_UNIT[agent]
    tag = f"kill9-{agent}"
    dest = f"{vmlib.MNT_EXT4}/{tag}.bin"
    before = sd.show(unit, "MainPID", "NRestarts")
    off = sd.offset()
    u0 = sched.at(4, "/run/qga-vm/writer.sh", tag, SRC, dest)
    sched.at(8, "/run/qga-vm/act.sh", "kill", unit)
    f: Dict[str, Any] = {"scheduled at t": u0, "old pid": int(before["MainPID"])}
    f["frozen"] = sd.agent().execute("guest-fsfreeze-freeze", timeout=60)
    t_freeze = time.monotonic()
    kill = sd.g.wait_console(ACT_RX.format(act="kill"), 60, off)
    f["killed at t"], f["killed pid"] = float(kill["t"]), int(kill["pid"] or 0)
    sd.g.detach_agent()
    c = sd.agent(timeout=90)  # answered by the restarted agent: the old one is dead
    f["status after restart"] = c.execute("guest-fsfreeze-status")
    try:
        c.execute("guest-exec", {"path": "/bin/true"})
        f["guest-exec after restart"] = "allowed"
    except vmlib.AgentError as e:
        f["guest-exec after restart"] = f"refused: {e.desc}"
    m = re.search(r"qga-vm-writer: " + re.escape(tag) + r" start t=([\d.]+)", sd.g.console()[off:])
    f["writer started at t"] = float(m.group(1)) if m else None
    f["writer done before the thaw"] = writer_seen(sd, tag, dest, off)
    if agent == "py":
        wait_thawed(sd, TIMEOUT + 60)
        f["thawed by"] = "the agent"
    else:
        # qemu-ga has no limit: look once qemu-ga-py's deadline is well past, then thaw.
        time.sleep(max(0.0, t_freeze + TIMEOUT + 8 - time.monotonic()))
        f[f"status {TIMEOUT + 8} s after the freeze"] = status(sd)
        f["thawed by"] = "the host's guest-fsfreeze-thaw"
        f["thaw count"] = sd.agent().execute("guest-fsfreeze-thaw", timeout=60)
    f["thaw seen after freeze s"] = round(time.monotonic() - t_freeze, 1)
    w = writer_done(sd, tag, dest, off, 60)
    f["writer"] = dict(w, intact=sha256(sd, dest) == w["sha256"] == sha256(sd, SRC))
    after = sd.show(unit, "MainPID", "NRestarts", "ExecMainStartTimestampMonotonic")
    f["new pid"], f["restarts"] = int(after["MainPID"]), int(after["NRestarts"]) - int(before["NRestarts"])
    f["restarted at t"] = int(after["ExecMainStartTimestampMonotonic"]) / 1e6
    if agent == "py":
        rec = _auto_thaw_record(sd)
        f["auto-thaw"] = rec and {k: rec.get(k) for k in ("_PID", "QGA_FROZEN_SINCE", "QGA_DEADLINE",
                                                          "QGA_THAWED_AT", "QGA_THAWED", "MESSAGE")}
        if rec:
            f["thawed after the deadline s"] = round(float(rec["QGA_THAWED_AT"]) - float(rec["QGA_DEADLINE"]), 1)
        f["a deadline counted from the restart would be t"] = round(f["restarted at t"] + TIMEOUT, 1)
        # The monitor polls slowly under TCG: it may miss the restarted agent's countdown.
        f["STATUS= of the restarted agent (monitor)"] = sorted({m.status for m in sd.mon(off)
                                                              if m.pid == f["new pid"] and m.status})
    return f


def test_kill9_while_frozen_thaws_at_the_original_deadline(fz: SdGuest, second_guest: BackgroundBoot,
                                                          tmp_path: Path) -> None:
    """kill -9 while frozen: systemd restarts the agent, it comes up frozen and thaws at the
    deadline of the original freeze; the writer blocked meanwhile completes, data intact."""
    out = Outcome(tmp_path, "kill -9 of the agent while frozen")
    sched = Scheduler(fz)
    py = out.put("py", _kill9_run(fz, sched, "py"))
    # qemu-ga's run only sleeps through its wait: the poweroff test's guest can boot now.
    second_guest.start()
    out.reference("c", lambda: _kill9_run(fz, sched, "c"))
    out.show()
    assert py["frozen"] == 1 and py["killed pid"] == py["old pid"] != py["new pid"], str(out)
    assert py["restarts"] == 1, f"systemd did not restart the agent (Restart=)\n{out}"
    assert py["status after restart"] == "frozen" and py["guest-exec after restart"].startswith("refused"), \
        f"the restarted agent did not come up frozen\n{out}"
    rec = py["auto-thaw"]
    assert rec is not None and int(rec["_PID"]) == py["new pid"], f"no auto-thaw by the restarted agent\n{out}"
    assert rec.get("QGA_FROZEN_SINCE") not in (None, "None"), \
        f"the restarted agent did not know when the freeze began\n{out}"
    since, deadline, thawed_at = (float(rec[k]) for k in ("QGA_FROZEN_SINCE", "QGA_DEADLINE", "QGA_THAWED_AT"))
    # The restarted agent kept the original freeze's deadline: counted from a start before
    # the kill (and its own start), not from its own start.
    assert py["scheduled at t"] <= since < py["killed at t"] < py["restarted at t"], str(out)
    assert abs(deadline - (since + TIMEOUT)) < 0.01 and thawed_at >= deadline, str(out)
    w = py["writer"]
    assert py["writer started at t"] is not None and since < py["writer started at t"], str(out)
    assert not py["writer done before the thaw"] and w["t"] >= deadline - 0.05, \
        f"the writer was not held by the freeze\n{out}"
    assert w["rc"] == 0 and w["intact"], f"the writer's data did not survive\n{out}"


# --------------------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SHUTDOWN_LINE = re.compile(r"qemu-guest-agent|qemu-ga-py|[Tt]imed out|Killing|data\\x2d|frozen|thaw")


class PoweroffWatch:
    """Times a scheduled ``systemctl poweroff`` from its console line to QEMU's exit, in a thread."""

    def __init__(self, g: vmlib.Guest, start: int) -> None:
        self.g, self.start = g, start
        self.facts: Dict[str, Any] = {}
        self.thread = threading.Thread(target=self._run, name=f"poweroff-{g.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            m = self.g.wait_console(ACT_RX.format(act="poweroff"), 60, self.start)
            t0 = time.monotonic()
            self.facts["poweroff at t"] = float(m["t"])
            assert self.g.proc is not None
            try:
                self.facts["qemu exit status"] = self.g.proc.wait(timeout=HANG_LIMIT)
                self.facts["powered off after s"] = round(time.monotonic() - t0, 1)
            except subprocess.TimeoutExpired:
                self.facts["hung"] = f"still running {HANG_LIMIT:.0f} s after systemctl poweroff"
        except Exception as e:  # noqa: BLE001 - reported in the facts
            self.facts["error"] = f"{type(e).__name__}: {e}"[:2000]

    def result(self) -> Dict[str, Any]:
        """Wait for the outcome; the console lines of the shutdown that concern the agents."""
        self.thread.join(HANG_LIMIT + 90)
        text = ANSI.sub("", self.g.console()[self.start:]).replace("\r", "")
        m = re.search(r"qga-vm-act: stopped t=([\d.]+) (.*)", text)
        if m:
            self.facts["agent stopped at t"] = float(m.group(1))
            self.facts["agent unit once stopped"] = dict(kv.split("=", 1) for kv in m.group(2).split()
                                                         if "=" in kv)
        self.facts["console"] = [line.strip() for line in text.splitlines()
                                 if SHUTDOWN_LINE.search(line)][-12:]
        if "hung" in self.facts:
            self.g.kill()
        return self.facts


def _poweroff_start(sd: SdGuest, agent: str) -> "tuple[Dict[str, Any], PoweroffWatch]":
    """Freeze-all, and 3 s later `systemctl poweroff` (scheduled before the freeze)."""
    use(sd, agent)
    # The root is an overlay (over the host's / on 9p): no FIFREEZE, so only the data disks freeze.
    f: Dict[str, Any] = {"root": sd.sh("awk '$2 == \"/\" {t = $3} END {print t}' /proc/mounts").strip()}
    f["root freezable"] = sd.sh("fsfreeze --freeze / 2>&1; rc=$?; [ $rc = 0 ] && fsfreeze --unfreeze /; "
                                "echo rc=$rc").strip().splitlines()[-1] == "rc=0"
    # Reports how the agent's unit stopped, from the shutdown itself (see the unit file).
    witness = f"qga-vm-stop-witness@{AGENT_UNIT[agent][:-len('.service')]}.service"
    sd.sh(f"install -m 644 '{HELPERS}/qga-vm-stop-witness@.service' /run/systemd/system/ && "
          f"systemctl daemon-reload && systemctl start '{witness}'")
    off = sd.offset()
    Scheduler(sd).at(3, "/run/qga-vm/act.sh", "poweroff")
    f["frozen"] = sd.agent().execute("guest-fsfreeze-freeze", timeout=60)
    return f, PoweroffWatch(sd.g, off)


def test_poweroff_while_frozen(fz: SdGuest, second_guest: BackgroundBoot, tmp_path: Path) -> None:
    """`systemctl poweroff` with the data filesystems frozen: qemu-ga-py's guest powers off.

    qemu-ga-py thaws on SIGTERM and exits: its unit stops with Result=success and
    the filesystems thawed (a witness unit ordered to stop after it says so).

    qemu-ga goes first, in the shared guest (ending it); qemu-ga-py's guest
    (second_guest) finishes booting while qemu-ga's shutdown runs its course.
    """
    out = Outcome(tmp_path, "systemctl poweroff while frozen")
    c_watch: Optional[PoweroffWatch] = None
    c: Dict[str, Any] = {}
    try:
        stop_timeout = fz.show(REF_UNIT, "TimeoutStopUSec")["TimeoutStopUSec"]  # before the freeze
        c, c_watch = _poweroff_start(fz, "c")
        c["TimeoutStopSec"] = stop_timeout
    except Exception as e:  # noqa: BLE001 - qemu-ga's outcome is recorded, not asserted
        c["error"] = f"{type(e).__name__}: {e}"[:2000]
    try:
        b = second_guest.get()
        install_helpers(b)
        py, watch = _poweroff_start(b, "py")
        py.update(watch.result())
        out.put("py", py)
    finally:
        if c_watch is not None:
            c.update(c_watch.result())
        out.put("c", c)
        out.show()
    assert py["frozen"] == 2, f"freeze-all should have frozen both data disks\n{out}"
    stopped = py.get("agent unit once stopped", {})
    # SIGTERM while frozen: the agent thawed and exited by itself (no stop timeout, no SIGKILL).
    assert (stopped.get("Result"), stopped.get("ExecMainStatus")) == ("success", "0"), \
        f"qemu-ga-py did not stop cleanly at the poweroff\n{out}"
    assert stopped.get(vmlib.MNT_EXT4) == stopped.get(vmlib.MNT_XFS) == "thawed", \
        f"the data filesystems were still frozen once qemu-ga-py had stopped\n{out}"
    assert "powered off after s" in py, f"qemu-ga-py's guest did not power off\n{out}"
