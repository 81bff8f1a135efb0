"""VM scenarios shared by the reference (qemu-ga 7.2) and qemu-ga-py test files.

Each ``check_*`` function drives one scenario against a booted :class:`Guest`
and asserts on what only a real VM can show. Functions that change guest state
restore it before returning (the session guest is shared).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import warnings
from typing import Any, Dict, List, Optional, Tuple

from tests.vm.vmlib import (GUEST_IP, MNT_EXT4, MNT_XFS, PCI_SLOT, SERIAL_EXT4, SERIAL_XFS,
                            AgentClient, AgentError, Guest)

# Commands every agent inside a Linux guest must list (present in 7.2 and master).
CORE_COMMANDS = {
    "guest-sync", "guest-sync-delimited", "guest-ping", "guest-info", "guest-exec", "guest-exec-status",
    "guest-file-open", "guest-file-read", "guest-file-write", "guest-file-close", "guest-file-seek",
    "guest-file-flush", "guest-shutdown", "guest-fsfreeze-freeze", "guest-fsfreeze-freeze-list",
    "guest-fsfreeze-thaw", "guest-fsfreeze-status", "guest-get-fsinfo", "guest-get-disks",
    "guest-network-get-interfaces", "guest-get-vcpus", "guest-set-vcpus", "guest-get-time",
    "guest-set-time", "guest-set-user-password", "guest-suspend-ram", "guest-get-osinfo",
    "guest-get-host-name",
}


def ensure_healthy(g: Guest) -> None:
    """Resynchronise the shared guest's channel and undo a leftover freeze."""
    ag = g.agent
    ag.sync_delimited(timeout=20)
    if ag.execute("guest-fsfreeze-status") == "frozen":
        ag.execute("guest-fsfreeze-thaw", timeout=60)


# -- handshakes -----------------------------------------------------------------------


def check_libvirt_sync(g: Guest) -> None:
    """libvirt: guest-sync with a millisecond timestamp id; stale replies are skipped."""
    ag = g.agent
    sid = int(time.time() * 1000)
    assert ag.sync(sync_id=sid) == sid
    # A reply left over from an earlier sync must not be mistaken for the current one.
    ag.send_raw(json.dumps({"execute": "guest-sync", "arguments": {"id": sid + 1}}).encode() + b"\n")
    assert ag.sync(sync_id=sid + 2) == sid + 2
    assert ag.cmd("guest-ping", timeout=10) == {"return": {}}


def check_delimited_sync(g: Guest) -> None:
    """0xFF + guest-sync-delimited: the reply itself is preceded by a raw 0xFF byte."""
    ag = g.agent
    sid = 0x5A5A1234
    ag.send_raw(b"\xff")
    ag.send_raw(json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": sid}}).encode() + b"\n")
    raw = b""
    deadline = time.monotonic() + 10
    while b'"return": %d' % sid not in raw and b'"return":%d' % sid not in raw:
        assert time.monotonic() < deadline, f"no delimited reply; got {raw!r}"
        raw += ag.drain(0.3)
    i = raw.rindex(b"\xff")
    obj = json.loads(raw[i + 1:].decode())
    assert obj == {"return": sid}, raw
    # Anything before the sentinel is the error reply to the client's own 0xFF (if any).
    for line in raw[:i].split(b"\n"):
        if line.strip():
            assert "error" in json.loads(line.decode()), raw
    assert ag.sync_delimited() > 0


# -- information ------------------------------------------------------------------------


def check_guest_info(g: Guest) -> Dict[str, Any]:
    info = g.agent.execute("guest-info")
    names = {c["name"] for c in info["supported_commands"]}
    missing = CORE_COMMANDS - names
    assert not missing, f"guest-info lacks {sorted(missing)}"
    for c in info["supported_commands"]:
        assert set(c) == {"name", "enabled", "success-response"}, c
        if c["name"] in ("guest-shutdown", "guest-suspend-ram", "guest-suspend-disk", "guest-suspend-hybrid"):
            assert c["success-response"] is False, c
    assert isinstance(info["version"], str) and info["version"]
    return info


def _by_mount(fsinfo: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    return {f["mountpoint"]: f for f in fsinfo}


def check_fsinfo(g: Guest) -> List[Dict[str, Any]]:
    """Both data disks, with virtio PCI addresses, serials and device nodes."""
    fsinfo = g.agent.execute("guest-get-fsinfo")
    m = _by_mount(fsinfo)
    assert MNT_EXT4 in m and MNT_XFS in m, sorted(m)
    for mnt, typ, serial, slot, dev, name in [
            (MNT_EXT4, "ext4", SERIAL_EXT4, PCI_SLOT["ext4"], "/dev/vda1", "vda1"),
            (MNT_XFS, "xfs", SERIAL_XFS, PCI_SLOT["xfs"], "/dev/vdb", "vdb")]:
        fs = m[mnt]
        assert fs["type"] == typ and fs["name"] == name, fs
        assert fs["total-bytes"] > 0 and 0 <= fs["used-bytes"] <= fs["total-bytes"], fs
        assert len(fs["disk"]) == 1, fs
        d = fs["disk"][0]
        assert d["bus-type"] == "virtio", d
        assert d["pci-controller"] == {"domain": 0, "bus": 0, "slot": slot, "function": 0}, d
        assert d.get("serial") == serial, d
        assert d.get("dev") == dev, d
    # Pseudo and network filesystems (overlay root, tmpfs, 9p) have major 0: not listed.
    assert "/" not in m and "/tmp" not in m, sorted(m)
    return fsinfo


def check_disks(g: Guest) -> List[Dict[str, Any]]:
    disks = g.agent.execute("guest-get-disks")
    by = {d["name"]: d for d in disks}
    assert {"/dev/vda", "/dev/vda1", "/dev/vdb"} <= set(by), sorted(by)
    assert by["/dev/vda1"]["partition"] is True and by["/dev/vda1"]["dependencies"] == ["/dev/vda"]
    assert by["/dev/vda"]["partition"] is False and by["/dev/vdb"]["partition"] is False
    assert by["/dev/vda"]["address"]["serial"] == SERIAL_EXT4
    assert by["/dev/vdb"]["address"]["pci-controller"]["slot"] == PCI_SLOT["xfs"]
    names = [d["name"] for d in disks]
    assert names.index("/dev/vda1") < names.index("/dev/vda"), "partitions come before their disk"
    return disks


def check_interfaces(g: Guest) -> List[Dict[str, Any]]:
    ifs = {i["name"]: i for i in g.agent.execute("guest-network-get-interfaces")}
    assert "eth0" in ifs and "lo" in ifs, sorted(ifs)
    eth0 = ifs["eth0"]
    assert eth0["hardware-address"] == "52:54:00:12:34:56"
    v4 = [(a["ip-address"], a["prefix"]) for a in eth0["ip-addresses"] if a["ip-address-type"] == "ipv4"]
    assert v4 == [(GUEST_IP, 24)], eth0
    assert any(a["ip-address-type"] == "ipv6" and a["ip-address"].startswith("fe80::")
               for a in eth0["ip-addresses"]), eth0
    return list(ifs.values())


def check_osinfo(g: Guest) -> Dict[str, Any]:
    osi = g.agent.execute("guest-get-osinfo")
    assert osi["machine"] == "x86_64" and osi["kernel-release"].endswith("-amd64"), osi
    assert osi.get("id") == "debian", osi
    return osi


# -- exec and files ---------------------------------------------------------------------


def check_exec_and_files(g: Guest) -> None:
    ag = g.agent
    st = ag.exec_wait("/bin/sh", ["-c", "echo out; echo err >&2; cat; exit 3"], input_data=b"in\n")
    assert st["exitcode"] == 3 and st["out-data"] == b"out\nin\n" and st["err-data"] == b"err\n", st
    path = "/tmp/qga-vm-file-test"
    payload = bytes(range(256)) * 64
    h = ag.execute("guest-file-open", {"path": path, "mode": "w+"})
    try:
        w = ag.execute("guest-file-write", {"handle": h, "buf-b64": base64.b64encode(payload).decode()})
        assert w["count"] == len(payload), w
        ag.execute("guest-file-flush", {"handle": h})
        s = ag.execute("guest-file-seek", {"handle": h, "offset": 0, "whence": "set"})
        assert s["position"] == 0, s
        r = ag.execute("guest-file-read", {"handle": h, "count": len(payload) + 10})
        assert base64.b64decode(r["buf-b64"]) == payload and r["count"] == len(payload), r["count"]
    finally:
        ag.execute("guest-file-close", {"handle": h})
    assert ag.sh(f"sha256sum {path} | cut -c1-64").strip() == hashlib.sha256(payload).hexdigest()
    assert ag.read_file(path) == payload


# -- freeze ----------------------------------------------------------------------------------

# Each iteration logs "<before> <after>" (guest monotonic-ish wall clock) around an
# append to the disk under test; a frozen filesystem blocks the append in write(2).
_WRITER = r"""
n=0
while [ ! -e /tmp/stop-writers ]; do
  t0=$(date +%s.%N)
  echo "$n $t0" >> {mnt}/writer.dat
  echo "$t0 $(date +%s.%N)" >> /tmp/writer-{tag}.log
  n=$((n+1)); sleep 0.05
done
"""


def _start_writer(ag: AgentClient, mnt: str, tag: str) -> int:
    script = _WRITER.replace("{mnt}", mnt).replace("{tag}", tag)
    return ag.execute("guest-exec", {"path": "/bin/sh", "arg": ["-c", script]})["pid"]


def _writer_stats(ag: AgentClient, tag: str) -> Tuple[float, int]:
    """(longest single append in seconds, number of appends)."""
    try:
        lines = ag.read_file(f"/tmp/writer-{tag}.log").decode().split("\n")
    except AgentError:
        return 0.0, 0  # not written yet (a blocked or slow writer)
    spans = [float(b) - float(a) for a, b in (ln.split() for ln in lines if ln.strip())]
    return max(spans or [0.0]), len(spans)


def _wait_blocked(ag: AgentClient, tag: str, hold: float) -> float:
    """Longest append once it shows up: a released writer may log it a little later."""
    deadline = time.monotonic() + 30
    while True:
        longest, _ = _writer_stats(ag, tag)
        if longest >= hold * 0.5 or time.monotonic() > deadline:
            return longest
        time.sleep(0.5)


def _stop_writers(ag: AgentClient, pids: List[int]) -> None:
    ag.sh("touch /tmp/stop-writers")
    deadline = time.monotonic() + 30
    for pid in pids:
        while not ag.execute("guest-exec-status", {"pid": pid}).get("exited"):
            assert time.monotonic() < deadline, "writer did not stop"
            time.sleep(0.1)


def check_freeze_thaw(g: Guest, hold: float = 4.0) -> None:
    """freeze-all and freeze-list block a guest-side writer, thaw releases it.

    An append normally takes milliseconds; one that spans at least half the
    frozen period proves the writer was blocked (the loop, forking date(1)
    under TCG on a loaded host, can take up to a second per turn).
    """
    ag = g.agent
    ag.sh("rm -f /tmp/stop-writers /tmp/writer-*.log")
    pids = [_start_writer(ag, MNT_EXT4, "ext4"), _start_writer(ag, MNT_XFS, "xfs")]
    try:
        deadline = time.monotonic() + 60
        while min(_writer_stats(ag, t)[1] for t in ("ext4", "xfs")) < 2:
            assert time.monotonic() < deadline, "writers did not start"
            time.sleep(0.3)
        # 1. freeze everything freezable: exactly the two data disks.
        n = ag.execute("guest-fsfreeze-freeze", timeout=60)
        try:
            assert n == 2, n
            assert ag.execute("guest-fsfreeze-status") == "frozen"
            blocked = ag.cmd("guest-exec", {"path": "/bin/true"})
            assert "error" in blocked, f"guest-exec must be refused while frozen: {blocked}"
            time.sleep(hold)
        finally:
            thawed = ag.execute("guest-fsfreeze-thaw", timeout=60)
        assert thawed == 2, thawed
        assert ag.execute("guest-fsfreeze-status") == "thawed"
        for tag in ("ext4", "xfs"):
            longest = _wait_blocked(ag, tag, hold)
            assert longest >= hold * 0.5, f"{tag} writer was never blocked (longest append {longest:.2f}s)"
        # 2. freeze-list: only the ext4 disk; the xfs writer keeps going.
        ag.sh("rm -f /tmp/writer-*.log")
        n = ag.execute("guest-fsfreeze-freeze-list", {"mountpoints": [MNT_EXT4]}, timeout=60)
        try:
            assert n == 1, n
            time.sleep(hold)
        finally:
            thawed = ag.execute("guest-fsfreeze-thaw", timeout=60)
        assert thawed == 1, thawed
        ext4_longest = _wait_blocked(ag, "ext4", hold)
        _, ext4_count = _writer_stats(ag, "ext4")
        xfs_longest, xfs_count = _writer_stats(ag, "xfs")
        assert ext4_longest >= hold * 0.5, f"ext4 writer not blocked ({ext4_longest:.2f}s)"
        assert xfs_longest < hold * 0.5 and xfs_count > ext4_count, (xfs_longest, xfs_count, ext4_count)
    finally:
        if ag.execute("guest-fsfreeze-status") == "frozen":
            ag.execute("guest-fsfreeze-thaw", timeout=60)
        _stop_writers(ag, pids)
    # Released: the writers' appends are all on disk and continuous.
    for mnt in (MNT_EXT4, MNT_XFS):
        nums = [int(x.split()[0]) for x in ag.read_file(f"{mnt}/writer.dat").decode().splitlines()]
        assert nums == list(range(len(nums))) and len(nums) >= 3, (mnt, nums[-5:])


# -- host detach / re-attach -------------------------------------------------------------------


def _append_cmd(text: str) -> bytes:
    return json.dumps({"execute": "guest-exec", "arguments": {
        "path": "/bin/sh", "arg": ["-c", f"echo {text} >> /tmp/detach.log"]}}).encode() + b"\n"


def check_detach_reattach(g: Guest, detached_for: float = 4.0) -> None:
    """Close the host socket mid-request, reconnect: nothing lost, nothing duplicated, no spinning."""
    ag = g.agent
    ag.sh("rm -f /tmp/detach.log")
    pid = g.agent_pid()
    ag.send_raw(_append_cmd("A"))
    assert "return" in ag.recv(10)
    cpu0 = g.agent_cpu_seconds(pid)
    half = _append_cmd("B")
    ag.send_raw(half[: len(half) // 2])      # mid-stream: an incomplete request
    g.detach_agent()
    time.sleep(detached_for)
    ag = g.reconnect_agent()
    ag.sync_delimited(timeout=20)           # 0xFF discards the half request
    cpu1 = g.agent_cpu_seconds(pid)
    ag.send_raw(_append_cmd("C"))
    assert "return" in ag.recv(10)
    time.sleep(0.5)
    assert ag.read_file("/tmp/detach.log") == b"A\nC\n"
    assert ag.cmd("guest-ping") == {"return": {}}
    # Detached, the agent may poll (10 Hz) but must not spin: allow 10% of one CPU.
    assert cpu1 - cpu0 < 0.1 * detached_for + 0.2, f"agent used {cpu1 - cpu0:.2f}s CPU while detached"
    assert g.agent_pid() == pid, "the agent restarted"


# -- state-changing commands (restored afterwards) --------------------------------------------


def check_set_vcpus(g: Guest) -> None:
    ag = g.agent
    cpus = {c["logical-id"]: c for c in ag.execute("guest-get-vcpus")}
    assert set(cpus) == {0, 1} and cpus[1]["can-offline"] and cpus[1]["online"], cpus
    try:
        assert ag.execute("guest-set-vcpus", {"vcpus": [{"logical-id": 1, "online": False}]}) == 1
        cpus = {c["logical-id"]: c for c in ag.execute("guest-get-vcpus")}
        assert cpus[1]["online"] is False and cpus[0]["online"] is True, cpus
        assert ag.read_file("/sys/devices/system/cpu/cpu1/online").strip() == b"0"
        assert ag.sh("grep -c ^processor /proc/cpuinfo").strip() == "1"
    finally:
        assert ag.execute("guest-set-vcpus", {"vcpus": [{"logical-id": 1, "online": True}]}) == 1
    cpus = {c["logical-id"]: c for c in ag.execute("guest-get-vcpus")}
    assert cpus[1]["online"] is True, cpus
    assert ag.read_file("/sys/devices/system/cpu/cpu1/online").strip() == b"1"


def check_set_time(g: Guest) -> None:
    """With a time: clock and RTC set; without: clock re-read from the RTC."""
    ag = g.agent
    day = 86400 * 10**9
    try:
        target = time.time_ns() + day
        ag.execute("guest-set-time", {"time": target}, timeout=60)
        got = ag.execute("guest-get-time")
        assert abs(got - target) < 30 * 10**9, (got - target) / 1e9
        rtc = int(ag.sh("cat /sys/class/rtc/rtc0/since_epoch"))
        assert abs(rtc - target // 10**9) < 30, (rtc, target // 10**9)
    finally:
        ag.execute("guest-set-time", {"time": time.time_ns()}, timeout=60)
    got = ag.execute("guest-get-time")
    assert abs(got - time.time_ns()) < 30 * 10**9
    # No argument: system time <- RTC (which now holds the host's time again).
    ag.sh("date -s @1000000000 >/dev/null")
    ag.execute("guest-set-time", timeout=60)
    got = ag.execute("guest-get-time")
    assert abs(got - time.time_ns()) < 30 * 10**9, (got - time.time_ns()) / 1e9


def check_set_user_password(g: Guest) -> None:
    ag = g.agent
    user = "qgavmuser"
    ag.sh(f"id {user} >/dev/null 2>&1 || useradd -M -s /bin/sh {user}")

    def shadow_hash() -> str:
        for line in ag.read_file("/etc/shadow").decode().splitlines():
            if line.startswith(user + ":"):
                return line.split(":")[1]
        raise AssertionError(f"{user} not in /etc/shadow")

    before = shadow_hash()
    pw = "S3cret-pässword"
    ag.execute("guest-set-user-password", {"username": user, "crypted": False,
                                           "password": base64.b64encode(pw.encode()).decode()}, timeout=60)
    h = shadow_hash()
    assert h != before and h.startswith("$"), h
    try:
        with warnings.catch_warnings():  # crypt: deprecated in 3.11, gone in 3.13
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
    except ImportError:
        crypt = None  # type: ignore[assignment]
    if crypt is not None:
        assert crypt.crypt(pw, h) == h, "shadow hash does not match the password"
    fixed = "$6$qgavmsalt$" + "A" * 86
    ag.execute("guest-set-user-password", {"username": user, "crypted": True,
                                           "password": base64.b64encode(fixed.encode()).decode()}, timeout=60)
    assert shadow_hash() == fixed
    r = ag.cmd("guest-set-user-password", {"username": "nosuchuserqga", "crypted": False,
                                           "password": base64.b64encode(b"x").decode()}, timeout=60)
    assert "error" in r, r


# -- power: fresh guests only -------------------------------------------------------------------


def check_shutdown(g: Guest, mode: Optional[str] = None) -> None:
    args = {"mode": mode} if mode else None
    g.agent.send_no_reply("guest-shutdown", args)
    ev = g.qmp.wait_event("SHUTDOWN", timeout=60)
    assert ev["data"].get("guest") is True, ev
    g.wait_exit(60)


def check_reboot(g: Guest) -> None:
    g.agent.send_no_reply("guest-shutdown", {"mode": "reboot"})
    g.qmp.wait_event("RESET", timeout=60)
    mark = len(g.console())
    g.wait_agent(timeout=120, marker_from=mark)
    assert g.agent.cmd("guest-ping") == {"return": {}}
    assert g.is_running()
    up = float(g.agent.read_file("/proc/uptime").split()[0])
    assert up < 120, f"guest did not reboot (uptime {up})"


def check_suspend_ram(g: Guest) -> None:
    ag = g.agent
    ag.sh("echo before-suspend > /tmp/suspend-marker")
    ag.send_no_reply("guest-suspend-ram")
    g.qmp.wait_event("SUSPEND", timeout=60)
    assert g.qmp.execute("query-status")["status"] == "suspended"
    # No reply from the agent while suspended (and none for a successful suspend).
    time.sleep(1)
    g.qmp.execute("system_wakeup")
    g.qmp.wait_event("WAKEUP", timeout=60)
    ag.sync_delimited(timeout=60)
    assert ag.cmd("guest-ping") == {"return": {}}
    assert ag.read_file("/tmp/suspend-marker") == b"before-suspend\n"
    assert g.qmp.execute("query-status")["status"] == "running"
