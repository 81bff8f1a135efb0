"""qemu-ga-py installed like a distro package, in a guest booted with systemd as PID 1.

One guest for the session (``Guest(init="systemd")``, conftest's ``sd``,
shared with test_vm_systemd_freeze.py, which runs after this module): the initramfs copies the
checkout's ``systemd/qemu-ga-py.service`` to ``/etc/systemd/system/``,
``systemd/99-qemu-ga-py.rules`` to ``/etc/udev/rules.d/`` and writes a
``/usr/bin/qemu-ga-py`` wrapper (``guest/systemd-root.sh``), then switch_roots
into ``/lib/systemd/systemd``. Nothing starts the agent but the guest's own
udev + systemd: the port's device unit pulls the service in (SYSTEMD_WANTS).

The agent runs on Debian's ``/usr/bin/python3`` (not the host's pyenv python
the other VM tests use) because that is the interpreter Debian's
python3-systemd is built for: with it the agent logs to journald through
systemd-python with structured QGA_* fields, as the RPM (Requires:
python3-systemd) would. The host therefore needs the Debian packages
``systemd``, ``udev`` and ``python3-systemd`` (installed on demand, like the
rest of the tier's prerequisites).

Witnesses: the agent itself (guest-exec of systemctl/journalctl/udevadm), and,
for the moments when the agent is down (restart, unplugged port), a monitor
unit in the guest (``guest/systemd/monitor.sh``) that prints every state change
of qemu-ga-py.service and of the port's device unit on the serial console.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.prereq import require
from tests.vm import vmlib
from tests.vm.sdguest import DEV_UNIT, GUEST_PYTHON, PORT, REF_UNIT, UNIT, SdGuest

pytestmark = pytest.mark.vm


def test_udev_starts_the_unit_by_itself(sd: SdGuest) -> None:
    assert sd.sh("cat /proc/1/comm").strip() == "systemd"
    boot = sd.mon()
    first_pid = next(m for m in boot if m.pid)
    # The device unit was up before the service got a process; nothing enabled the service.
    assert first_pid.dev == "active", [str(m) for m in boot]
    assert any(m.dev == "inactive" and m.active == "inactive" for m in boot[:boot.index(first_pid)]), \
        "monitor did not see the state before the port's device unit appeared"
    svc = sd.show(UNIT, "LoadState", "FragmentPath", "UnitFileState", "ExecStart", "MainPID")
    assert svc["LoadState"] == "loaded"
    assert svc["FragmentPath"] == f"/etc/systemd/system/{UNIT}"
    assert svc["UnitFileState"] == "disabled", "the unit must start from udev, not from a target"
    assert sd.agent().read_file(svc["FragmentPath"]) == \
        (vmlib.REPO_ROOT / "systemd" / UNIT).read_bytes()
    # The /dev/virtio-ports alias follows the sysfs device unit, which carries
    # udev's SYSTEMD_WANTS as a Wants= dependency.
    dev = sd.show(DEV_UNIT, "ActiveState", "Following", "SysFSPath")
    assert dev["ActiveState"] == "active" and "/virtio-ports/vport" in dev["SysFSPath"], dev
    wants = sd.show(dev["Following"], "Wants")["Wants"]
    assert UNIT in wants, wants
    assert REF_UNIT not in wants, "Debian's 60-qemu-guest-agent.rules was not overridden"
    # udev (not our initramfs) made the link and tagged the device for systemd.
    props = dict(line.split("=", 1) for line in
                 sd.sh(f"udevadm info -q property -n {PORT}").splitlines() if "=" in line)
    assert props.get("SYSTEMD_WANTS") == UNIT
    assert ":systemd:" in props.get("TAGS", "")
    assert PORT in props.get("DEVLINKS", "").split()
    assert props.get("DEVPATH", "").startswith("/devices/") and "virtio-ports/vport" in props["DEVPATH"]
    # The main process is the checkout's agent on Debian's python, via /usr/bin/qemu-ga-py.
    pid = int(svc["MainPID"])
    cmd = sd.agent().read_file(f"/proc/{pid}/cmdline").split(b"\0")
    assert b"qga" in cmd and f"--path={PORT}".encode() in cmd, cmd
    exe = sd.sh(f"readlink /proc/{pid}/exe").strip()
    assert exe == os.path.realpath(GUEST_PYTHON), exe
    assert "/usr/bin/qemu-ga-py" in svc["ExecStart"]
    vmlib.log(f"systemd guest timings: {sd.timings}")


def test_active_only_after_ready(sd: SdGuest) -> None:
    lines = sd.mon()
    own = [m for m in lines if m.pid == sd.boot_pid]
    assert own, [str(m) for m in lines]
    # systemd had the process but kept the unit "activating" until READY=1...
    assert own[0].active == "activating" and own[0].sub == "start", [str(m) for m in own]
    # ...and READY=1 came only once the channel was open, with STATUS=ready.
    first_active = next(m for m in own if m.active == "active")
    assert first_active.port and first_active.status == "ready", str(first_active)
    bad = [str(m) for m in lines if m.active == "active" and not m.port]
    assert not bad, f"unit active without the channel open: {bad}"
    p = sd.show(UNIT, "Type", "NotifyAccess", "StatusText", "WatchdogUSec",
                "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
    assert (p["Type"], p["NotifyAccess"], p["StatusText"]) == ("notify", "main", "ready")
    assert p["WatchdogUSec"] == "1min"
    wait = (int(p["ActiveEnterTimestampMonotonic"]) - int(p["ExecMainStartTimestampMonotonic"])) / 1e6
    assert wait > 0, p
    vmlib.log(f"systemd guest: exec -> READY {wait:.2f}s (monitor: {own[0].t} -> {first_active.t})")


def test_host_clients_talk_to_the_service(sd: SdGuest) -> None:
    # libvirt's handshake (guest-sync with a timestamp id), then a command.
    c = sd.agent()
    info = c.execute("guest-info")
    assert any(x["name"] == "guest-exec" and x["enabled"] for x in info["supported_commands"])
    # The administrator's client (one connection at a time on the chardev socket).
    sd.g.detach_agent()
    env = dict(os.environ, PYTHONPATH=str(vmlib.REPO_ROOT))
    base = [sys.executable, "-m", "qga.host.cli", "-s", sd.g.agent_sock, "--timeout", "20"]
    r = subprocess.run(base + ["ping"], env=env, timeout=60, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, universal_newlines=True)
    assert r.returncode == 0, r.stdout
    r = subprocess.run(base + ["exec", "--", "/bin/systemctl", "is-active", UNIT], env=env, timeout=90,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[0] == "active", r.stdout


def test_journal_structured_fields(sd: SdGuest) -> None:
    state = sd.sh("systemctl is-active systemd-journald.service || true").strip()
    require(None if state == "active" else f"journald is not running in the guest ({state})")
    sd.sh("echo journal-probe")  # guest-exec: one audit record through the journal handler
    recs = sd.journal(f"_SYSTEMD_UNIT={UNIT}", "SYSLOG_IDENTIFIER=qemu-ga-py")
    audit = [r for r in recs if r.get("QGA_COMMAND") == "guest-exec"]
    assert audit, f"no guest-exec audit record in the journal; got {recs[-5:]}"
    r = audit[-1]
    assert r["MESSAGE"] == "audit: guest-exec"
    assert r["QGA_RESULT"] == "ok" and r["PRIORITY"] == "6" and r["LOGGER"] == "qga.audit"
    assert r.get("QGA_PATH") == "/bin/sh"
    # Through systemd-python (journal.send), not the stdout stream: CODE_* fields are set.
    assert r.get("_TRANSPORT") == "journal" and "CODE_FUNC" in r, r


def test_watchdog_pings(sd: SdGuest) -> None:
    """WATCHDOG=1 from the event loop every WatchdogSec/2 (30 s): systemd records the ping.

    Waits until the boot-time agent has been active for a little over 30 s (this
    test runs before anything restarts it); WatchdogTimestamp only moves on start
    and on pings.
    """
    p = sd.show(UNIT, "MainPID", "ActiveEnterTimestampMonotonic", "WatchdogUSec")
    assert int(p["MainPID"]) == sd.boot_pid, "the boot-time agent was restarted before this test"
    active_at = int(p["ActiveEnterTimestampMonotonic"]) / 1e6
    half = 30.0  # WatchdogUSec=1min
    deadline = time.monotonic() + 60
    while True:
        w = sd.show(UNIT, "WatchdogTimestampMonotonic", "MainPID", "NRestarts")
        now = float(sd.sh("cut -d' ' -f1 /proc/uptime"))
        ping = int(w["WatchdogTimestampMonotonic"]) / 1e6
        if ping > active_at + half - 5:
            break
        assert time.monotonic() < deadline, (f"no WATCHDOG=1 recorded {now - active_at:.0f}s after "
                                             f"READY (last watchdog timestamp {ping}, active {active_at})")
        time.sleep(max(0.5, min(5.0, active_at + half + 1 - now)))
    assert int(w["MainPID"]) == sd.boot_pid and w["NRestarts"] == "0"
    vmlib.log(f"systemd guest: first watchdog ping {ping - active_at:.1f}s after READY")


def test_conflicts_with_qemu_guest_agent(sd: SdGuest) -> None:
    ref = sd.show(REF_UNIT, "LoadState", "ActiveState", "ConflictedBy")
    assert ref["LoadState"] == "loaded" and ref["ActiveState"] == "inactive", ref
    assert UNIT in ref["ConflictedBy"].split()
    assert REF_UNIT in sd.show(UNIT, "Conflicts")["Conflicts"].split()
    py_pid = int(sd.show(UNIT, "MainPID")["MainPID"])
    # Start Debian's qemu-ga (from a transient timer: not a child of the agent that is
    # about to be stopped): systemd must stop qemu-ga-py first.
    off = sd.offset()
    sd.sh(f"systemd-run --quiet --unit=qga-vm-swap1 --on-active=1 systemctl start {REF_UNIT}")
    sd.wait_mon(lambda m: m.active == "inactive" and m.sub == "dead", off, "qemu-ga-py stopped")
    sd.g.detach_agent()
    parent = sd.sh("readlink /proc/$PPID/exe").strip()
    assert parent == "/usr/sbin/qemu-ga", f"expected Debian's qemu-ga to answer, got {parent}"
    assert sd.sh(f"systemctl is-active {REF_UNIT} {UNIT} || true").split() == ["active", "inactive"]
    # And back: starting qemu-ga-py stops qemu-ga.
    off = sd.offset()
    sd.sh(f"systemd-run --quiet --unit=qga-vm-swap2 --on-active=1 systemctl start {UNIT}")
    m = sd.wait_mon(lambda m: m.active == "active" and m.port and m.pid != py_pid, off,
                    "qemu-ga-py active again")
    sd.g.detach_agent()
    assert sd.sh("readlink /proc/$PPID/exe").strip() == os.path.realpath(GUEST_PYTHON)
    assert sd.sh(f"systemctl is-active {REF_UNIT} {UNIT} || true").split() == ["inactive", "active"]
    assert int(sd.show(UNIT, "MainPID")["MainPID"]) == m.pid


def test_restart_after_kill9(sd: SdGuest) -> None:
    p = sd.show(UNIT, "MainPID", "NRestarts")
    old, n0 = int(p["MainPID"]), int(p["NRestarts"])
    off = sd.offset()
    # The exec child dies with the agent's cgroup; the delay lets its reply out first.
    sd.agent().execute("guest-exec", {"path": "/bin/sh", "arg": ["-c", f"sleep 1; kill -9 {old}"]})
    t0 = time.monotonic()
    m = sd.wait_mon(lambda m: m.active == "active" and m.port and m.pid not in (0, old), off,
                    "a restarted, active qemu-ga-py")
    took = time.monotonic() - t0
    seen = sd.mon(off)
    down = next((x for x in seen if x.pid != old), None)
    assert down is not None and down.active != "active", [str(x) for x in seen]
    assert m.restarts == str(n0 + 1), [str(x) for x in seen]
    sd.g.detach_agent()
    c = sd.agent(timeout=30)
    c.execute("guest-ping")
    p = sd.show(UNIT, "MainPID", "NRestarts", "ActiveState")
    assert (int(p["MainPID"]), int(p["NRestarts"]), p["ActiveState"]) == (m.pid, n0 + 1, "active")
    # systemd's own account (the monitor polls too coarsely to time the delay):
    # the kill, then Restart=always after RestartSec=1.
    recs = sd.journal("-u", UNIT)
    killed = [r for r in recs if "code=killed, status=9/KILL" in r.get("MESSAGE", "")]
    assert killed, [r.get("MESSAGE") for r in recs[-10:]]
    t_fail = int(killed[-1]["__MONOTONIC_TIMESTAMP"])
    sched = [r for r in recs if "Scheduled restart job" in r.get("MESSAGE", "")
             and int(r["__MONOTONIC_TIMESTAMP"]) >= t_fail]
    assert sched, [r.get("MESSAGE") for r in recs[-10:]]
    delay = (int(sched[0]["__MONOTONIC_TIMESTAMP"]) - t_fail) / 1e6
    assert delay >= 0.9, f"restarted {delay:.2f}s after the kill (RestartSec=1)"
    vmlib.log(f"systemd guest: kill -9 -> active again in {took:.1f}s (pid {old} -> {m.pid}, "
              f"restart scheduled {delay:.2f}s after the kill)")


def test_port_unplug_stops_and_replug_starts(sd: SdGuest) -> None:
    old = int(sd.show(UNIT, "MainPID")["MainPID"])
    sd.g.detach_agent()
    qmp = sd.g.qmp
    off = sd.offset()
    t0 = time.monotonic()
    qmp.execute("device_del", {"id": vmlib.AGENT_PORT_ID})
    qmp.wait_event("DEVICE_DELETED", timeout=30)
    gone = sd.wait_mon(lambda m: m.active == "inactive" and m.dev == "inactive", off,
                       "qemu-ga-py stopped after the port was unplugged")
    t_stop = time.monotonic() - t0
    # BindsTo=: Restart=always must not bring it back while the port is missing.
    time.sleep(3)
    after = [m for m in sd.mon(gone.offset) if m.active != "inactive" or m.pid]
    assert not after, [str(m) for m in after]
    off = sd.offset()
    t1 = time.monotonic()
    qmp.execute("device_add", {"driver": "virtserialport", "bus": "vser0.0", "nr": 1,
                               "chardev": "qga0", "name": vmlib.AGENT_PORT_NAME,
                               "id": vmlib.AGENT_PORT_ID})
    back = sd.wait_mon(lambda m: m.active == "active" and m.port and m.dev == "active", off,
                       "qemu-ga-py started again after the port came back")
    t_start = time.monotonic() - t1
    assert back.pid != old
    c = sd.agent(timeout=30)
    c.execute("guest-ping")
    assert sd.sh(f"readlink -f {PORT}").strip().startswith("/dev/vport")
    vmlib.log(f"systemd guest: device_del -> inactive {t_stop:.1f}s; device_add -> active {t_start:.1f}s")
