"""qemu-ga-py driven by libvirt itself: libvirtd + virsh, as on a production host.

One guest per agent (qemu-ga-py, then Debian's qemu-ga 7.2 as the reference
that every check must hold for too): the tier's disk-root guest (ext4 root
image, so it survives S3) started as a transient libvirt domain (``tests/vm/virsh.py``), the
agent on a ``<channel type='unix'>`` named ``org.qemu.guest_agent.0``.  libvirt
owns the host side of the port: it runs its guest-sync handshake before every
command and follows the port's VSERPORT_CHANGE events.  The read-only and
self-restoring checks come first, then suspend/wakeup cycles, then the
shutdown that ends the guest (pytest runs the tests in file order, all of one
agent's before the other's).  About a minute per agent under TCG.

The host needs Debian's libvirt-daemon, libvirt-daemon-system and
libvirt-clients (installed on demand as root, like the rest of the tier).  A
private libvirtd is started when the host has none running.
"""

from __future__ import annotations

import base64
import os
import re
import time
from typing import Dict, Iterator, List, NoReturn, Tuple

import pytest

import qga
from tests.prereq import require
from tests.vm import virsh, vmlib
from tests.vm.conftest import PY_BOOT_TIMEOUT

pytestmark = pytest.mark.vm

MNT_EXT4, MNT_XFS = vmlib.MNT_EXT4, vmlib.MNT_XFS
#: A checkout under /tmp or /run is bound back into the guest from the read-only root
#: disk (vdc; tests/vm/guest/init.sh), so the guest has one filesystem more there.
CHECKOUT_MOUNT = ([(str(vmlib.REPO_ROOT), "vdc", "ext4", "vdc")]
                  if str(vmlib.REPO_ROOT).startswith(("/tmp/", "/run/")) else [])
FS_COUNT = 2 + len(CHECKOUT_MOUNT)
SUSPEND_CYCLES = 4
# QEMU sends at most one VSERPORT_CHANGE per port per second and holds back
# (and merges) the later ones.  A suspend that starts sooner than that after the
# previous port event has its "closed" delivered late, possibly after the wakeup
# and in the middle of the next command, which libvirt then fails with "Guest
# agent disappeared while executing command" -- with qemu-ga 7.2 as with us.
PORT_EVENT_INTERVAL = 1.5


def _unavailable(reason: str) -> NoReturn:
    """Under CI a tier that cannot run fails; elsewhere it is skipped, naming the reason."""
    require(f"libvirt VM tests cannot run: {reason}")
    raise AssertionError("unreachable")


class Lv:
    """The libvirt guest, its daemon and its agent-lifecycle event stream."""

    def __init__(self, agent: str, g: virsh.LibvirtGuest, events: virsh.AgentEvents) -> None:
        self.agent_kind = agent
        self.g = g
        self.events = events
        self.dom = g.domain

    def run(self, *args: str) -> str:
        """``virsh <args[0]> DOM <args[1:]>``."""
        return self.g.virsh(args[0], self.dom, *args[1:])

    def agent(self, name: str, **arguments: object) -> object:
        """``virsh qemu-agent-command DOM`` with these arguments; the ``return`` value."""
        return self.g.agent_cmd(name, arguments or None)

    def sh(self, script: str, timeout: float = 60) -> bytes:
        """Run a shell snippet in the guest (guest-exec through virsh); its stdout."""
        pid = self.agent("guest-exec", path="/bin/sh", arg=["-c", script], **{"capture-output": True})
        assert isinstance(pid, dict)
        deadline = time.monotonic() + timeout
        while True:
            st = self.agent("guest-exec-status", pid=pid["pid"])
            assert isinstance(st, dict)
            if st["exited"]:
                assert st.get("exitcode") == 0, st
                return base64.b64decode(st.get("out-data", ""))
            assert time.monotonic() < deadline, f"{script!r} still running after {timeout}s"
            time.sleep(0.2)

    def read_file(self, path: str) -> bytes:
        """A guest file, read through the agent with qemu-agent-command."""
        h = self.agent("guest-file-open", path=path, mode="r")
        try:
            r = self.agent("guest-file-read", handle=h, count=65536)
            assert isinstance(r, dict) and r["eof"], r
            return base64.b64decode(r["buf-b64"])
        finally:
            self.agent("guest-file-close", handle=h)


@pytest.fixture(scope="module", params=["py", "c"], ids=["qemu-ga-py", "qemu-ga-7.2"])
def lv(request: pytest.FixtureRequest) -> Iterator[Lv]:
    """The guest, booted once per agent: qemu-ga-py, then Debian's qemu-ga 7.2 for reference."""
    if os.environ.get("QGA_SKIP_VM") == "1":
        _unavailable("disabled by QGA_SKIP_VM=1")  # as the rest of the VM tier: a failure under CI
    try:
        art = vmlib.prepare()
        vmlib.qemu_smoke_test()
        root = vmlib.ensure_rootfs_image()
    except vmlib.VMUnavailable as e:
        _unavailable(str(e))
    virsh.install_prerequisites()
    missing = virsh.missing_prerequisites()
    if missing:
        _unavailable("missing " + ", ".join(missing))
    daemon = virsh.Libvirtd()
    try:
        daemon.start()
    except vmlib.VMUnavailable as e:
        _unavailable(str(e))
    events = virsh.AgentEvents(daemon)
    g = None
    try:
        for attempt in (1, 2):
            # QEMU traces the guest's virtio-serial control messages (PORT_OPEN 1/0: the
            # guest side of a port opened/closed): the suspend test's witness of the port.
            g = virsh.LibvirtGuest(request.param, daemon, artifacts=art, rootfs_image=root,
                                   name=f"libvirt-{request.param}",
                                   extra_qemu=["-trace", "virtio_serial_handle_control_message"])
            try:
                g.boot(timeout=PY_BOOT_TIMEOUT + 60)
                break
            except (vmlib.GuestError, TimeoutError, virsh.VirshError) as e:
                g.close()
                # A silent hang (TCG on a starved host) gets one more try, as for the
                # tier's other guests; a guest that said what went wrong does not.
                if attempt == 2 or "guest reported" in str(e):
                    raise
        assert g is not None
        yield Lv(request.param, g, events)
    finally:
        if g is not None:
            g.close()
        events.close()
        daemon.stop()


def _table(out: str) -> List[List[str]]:
    """Rows of a virsh table (the lines after the '----' rule), split on whitespace."""
    lines = out.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("---"))
    return [line.split() for line in lines[rule + 1:] if line.strip()]


def _keys(out: str) -> Dict[str, str]:
    """'key : value' lines (guestinfo, guestvcpus)."""
    pairs = (line.split(":", 1) for line in out.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


# --------------------------------------------------------------------------------------
# Read-only and self-restoring checks


def test_qemu_agent_command_ping_and_info(lv: Lv) -> None:
    assert lv.agent("guest-ping") == {}
    info = lv.agent("guest-info")
    assert isinstance(info, dict)
    if lv.agent_kind == "py":
        assert info["version"] == qga.QEMU_VERSION
    else:
        assert info["version"].startswith("7.2."), info["version"]
    enabled = {c["name"] for c in info["supported_commands"] if c["enabled"]}
    # What the virsh commands below need.
    assert {"guest-sync", "guest-get-fsinfo", "guest-network-get-interfaces", "guest-fsfreeze-freeze",
            "guest-fsfreeze-freeze-list", "guest-get-time", "guest-set-time", "guest-get-host-name",
            "guest-get-vcpus", "guest-set-vcpus", "guest-set-user-password", "guest-suspend-ram",
            "guest-shutdown", "guest-get-osinfo", "guest-get-users", "guest-get-timezone",
            "guest-get-disks"} <= enabled


def test_domfsinfo_maps_disks_to_domain_targets(lv: Lv) -> None:
    # libvirt matches the agent's PCI address/serial of each disk to its own <disk> targets.
    rows = sorted(tuple(r) for r in _table(lv.run("domfsinfo")))
    assert rows == sorted([(MNT_EXT4, "vda1", "ext4", "vda"), (MNT_XFS, "vdb", "xfs", "vdb")] + CHECKOUT_MOUNT)


def test_domifaddr_source_agent(lv: Lv) -> None:
    rows: List[Tuple[str, str, str, str]] = []
    name = mac = ""
    for r in _table(lv.run("domifaddr", "--source", "agent")):
        if r[0] != "-":
            name, mac = r[0], r[1]
        rows.append((name, mac, r[2], r[3]))
    assert sorted(rows) == sorted([
        ("lo", "00:00:00:00:00:00", "ipv4", "127.0.0.1/8"),
        ("lo", "00:00:00:00:00:00", "ipv6", "::1/128"),
        ("eth0", "52:54:00:12:34:56", "ipv4", f"{vmlib.GUEST_IP}/24"),
        ("eth0", "52:54:00:12:34:56", "ipv6", "fe80::5054:ff:fe12:3456/64")])


def test_guestinfo(lv: Lv) -> None:
    info = _keys(lv.run("guestinfo"))
    assert lv.g.artifacts is not None
    expect = {"os.id": "debian", "os.machine": "x86_64", "os.kernel-release": lv.g.artifacts.kver,
              "timezone.name": "UTC", "timezone.offset": "0", "hostname": "qga-guest",
              "user.count": "0", "fs.count": str(FS_COUNT), "if.count": "2"}
    assert {k: info.get(k) for k in expect} == expect
    fs = {info[f"fs.{i}.mountpoint"]: (info[f"fs.{i}.fstype"], info[f"fs.{i}.disk.0.alias"],
                                       info[f"fs.{i}.disk.0.serial"]) for i in range(FS_COUNT)}
    fs.pop(str(vmlib.REPO_ROOT), None)
    assert fs == {MNT_EXT4: ("ext4", "vda", vmlib.SERIAL_EXT4), MNT_XFS: ("xfs", "vdb", vmlib.SERIAL_XFS)}
    disks = {info[f"disk.{i}.name"]: info.get(f"disk.{i}.alias")
             for i in range(int(info["disk.count"]))}
    assert disks == {"/dev/vda1": None, "/dev/vda": "vda", "/dev/vdb": "vdb", "/dev/vdc": "vdc"}


def test_domhostname_source_agent(lv: Lv) -> None:
    assert lv.run("domhostname", "--source", "agent").strip() == "qga-guest"
    assert lv.read_file("/proc/sys/kernel/hostname") == b"qga-guest\n"


def test_guestvcpus_offline_and_online(lv: Lv) -> None:
    assert _keys(lv.run("guestvcpus")) == {"vcpus": "0-1", "online": "0-1", "offlinable": "1"}
    lv.run("guestvcpus", "--cpulist", "1", "--disable")
    try:
        assert _keys(lv.run("guestvcpus"))["online"] == "0"
        assert lv.read_file("/sys/devices/system/cpu/cpu1/online") == b"0\n"
    finally:
        lv.run("guestvcpus", "--cpulist", "1", "--enable")
    assert _keys(lv.run("guestvcpus"))["online"] == "0-1"
    assert lv.read_file("/sys/devices/system/cpu/cpu1/online") == b"1\n"


def _froze(out: str) -> int:
    m = re.fullmatch(r"(?:Froze|Thawed) (\d+) filesystem\(s\)", out.strip())
    assert m, out
    return int(m.group(1))


def test_domfsfreeze_and_thaw(lv: Lv) -> None:
    try:
        assert _froze(lv.run("domfsfreeze")) == FS_COUNT
        assert lv.agent("guest-fsfreeze-status") == "frozen"
        assert _froze(lv.run("domfsthaw")) == FS_COUNT
        assert lv.agent("guest-fsfreeze-status") == "thawed"
        assert _froze(lv.run("domfsfreeze", "--mountpoint", MNT_XFS)) == 1
        assert lv.agent("guest-fsfreeze-status") == "frozen"
        # libvirt thaws everything (a thaw list is "not supported"): one filesystem was frozen.
        assert _froze(lv.run("domfsthaw")) == 1
        assert lv.agent("guest-fsfreeze-status") == "thawed"
    finally:
        if lv.agent("guest-fsfreeze-status") != "thawed":
            lv.run("domfsthaw")


def _domtime(lv: Lv) -> int:
    return int(lv.run("domtime").split(":", 1)[1])


def test_domtime_set_and_sync(lv: Lv) -> None:
    # Only the guest's clocks change: its system clock and its (emulated) RTC.
    lv.run("domtime", "--time", "1500000000")  # guest-set-time: the clock, then hwclock -w
    try:
        assert 1500000000 <= _domtime(lv) < 1500000000 + 600
        lv.run("domtime", "--now")
        assert abs(_domtime(lv) - time.time()) < 300
        # The system clock alone goes back to 2001; --sync (guest-set-time without a
        # time: hwclock -s) takes the RTC's time, which --now set to the host's.
        lv.sh("date -s @1000000000 >/dev/null")
        assert 1000000000 <= _domtime(lv) < 1000000000 + 600
        lv.run("domtime", "--sync")
        assert abs(_domtime(lv) - time.time()) < 300
    finally:
        lv.run("domtime", "--now")


def _shadow_hash(lv: Lv, user: str) -> str:
    for line in lv.read_file("/etc/shadow").decode().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return fields[1]
    raise AssertionError(f"no {user} in the guest's /etc/shadow")


def test_set_user_password(lv: Lv) -> None:
    assert _shadow_hash(lv, "root") == "*"
    lv.run("set-user-password", "root", "libvirt-s3cret")
    plain = _shadow_hash(lv, "root")
    assert plain.startswith("$") and len(plain) > 20, plain
    crypted = "$6$qgasalt$" + "A" * 86
    lv.run("set-user-password", "root", crypted, "--encrypted")
    assert _shadow_hash(lv, "root") == crypted


# --------------------------------------------------------------------------------------
# Destructive: suspend/wakeup cycles, then the shutdown that ends the guest


def _wait_port_quiet(lv: Lv) -> None:
    """Let QEMU's per-port event interval pass since the last port event libvirt saw."""
    last = lv.events.last_time(lv.dom)
    if last is not None:
        time.sleep(max(0.0, last + PORT_EVENT_INTERVAL - time.monotonic()))


def _port_open_messages(lv: Lv) -> List[int]:
    """The guest's PORT_OPEN control messages so far, from QEMU's trace: 1 opened, 0 closed."""
    return [int(v) for v in re.findall(r"virtio_serial_handle_control_message event 6, value (\d+)",
                                       lv.g.qemu_log_text())]


def test_dompmsuspend_wakeup_cycles(lv: Lv) -> None:
    """Each S3 cycle closes the port once (the device reset) and opens it once (resume).

    The guest kernel re-announces the open port on resume (one PORT_OPEN 1 per
    cycle); an agent that closed its port (PORT_OPEN 0), as a reopen would,
    could hit a command in flight: libvirt reports "Guest agent disappeared
    while executing command".  libvirt's agent-lifecycle events must follow the
    same rhythm, and the first command after each reconnect must succeed.
    """
    start = len(lv.events.states(lv.dom))
    opens = _port_open_messages(lv)
    assert opens and 0 not in opens, opens
    for cycle in range(SUSPEND_CYCLES):
        _wait_port_quiet(lv)
        mark = len(lv.events.states(lv.dom))
        lv.run("dompmsuspend", "mem")
        lv.g.wait_state(["pmsuspended"], timeout=120)
        gone = lv.events.wait(lv.dom, "disconnected", mark, timeout=60)
        lv.run("dompmwakeup")
        lv.events.wait(lv.dom, "connected", gone + 1, timeout=120)
        assert lv.g.state() == "running"
        # The first command after libvirt reconnected: no retry.
        assert lv.agent("guest-ping") == {}, f"cycle {cycle}"
        assert lv.agent("guest-get-host-name") == {"host-name": "qga-guest"}
    _wait_port_quiet(lv)
    assert lv.events.states(lv.dom, start) == ["disconnected", "connected"] * SUSPEND_CYCLES
    assert _port_open_messages(lv)[len(opens):] == [1] * SUSPEND_CYCLES
    # The agent never restarted: the guest's init started it once.
    assert lv.g.console().count("qga-vm: agent pid") == 1


def test_shutdown_mode_agent(lv: Lv) -> None:
    # virsh fails unless the agent accepted guest-shutdown (libvirt uses no ACPI fallback
    # with --mode agent); the transient domain is gone once the guest powered off.
    lv.run("shutdown", "--mode", "agent")
    assert lv.g.wait_state(["gone", "shut off"], timeout=120) in ("gone", "shut off")
