"""Inventory commands of qemu-ga-py against the system qemu-ga (Debian 7.2) on this machine.

Deliberate differences (we implement 10.2; README lists them):

* fsinfo: 10.2 adds ``total-bytes-privileged`` and drops bind-mount
  duplicates (same major:minor) that 7.2 still lists.
* interfaces: a link without any hardware address (tun, wireguard) has no
  ``hardware-address``; qemu-ga reports ``00:00:00:00:00:00``.
* guest-network-get-route does not exist in 7.2: compared with /proc directly.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from tests.agentproc import REFERENCE_QGA, AgentProcess, Conn, ours_argv, reference_argv

pytestmark = pytest.mark.reference


@pytest.fixture
def both(agent: AgentProcess, reference: AgentProcess) -> Tuple[Conn, Conn]:
    """Connections to qemu-ga-py and to the reference qemu-ga."""
    return agent.connect(), reference.connect()


def _stable_iface(entry: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(entry)
    stats = out.pop("statistics", None)
    out["statistics"] = sorted(stats) if stats is not None else None
    return out


def test_interfaces(both: Tuple[Conn, Conn]) -> None:
    mine, theirs = both
    # The reference is asked before and after ours: every /proc/net/dev counter of
    # ours lies between its two readings.
    before = theirs.cmd("guest-network-get-interfaces")
    ours = mine.cmd("guest-network-get-interfaces")
    after = theirs.cmd("guest-network-get-interfaces")
    assert [_stable_iface(e) for e in ours] == [_stable_iface(e) for e in before]
    for low, x, high in zip(before, ours, after):
        for key, value in x.get("statistics", {}).items():
            assert type(value) is int, (x["name"], key)
            assert low["statistics"][key] <= value <= high["statistics"][key], (x["name"], key)


def _bind_duplicates_dropped(ref: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """7.2 lists every mount of a device; 10.2 keeps the first (in mount order)."""
    kept: List[Dict[str, Any]] = []
    seen = set()
    for fs in reversed(ref):  # back to mount order
        key = (fs["name"], fs["type"])
        if key not in seen:
            seen.add(key)
            kept.append(fs)
    return list(reversed(kept))


def test_fsinfo(both: Tuple[Conn, Conn]) -> None:
    ours, ref = (c.cmd("guest-get-fsinfo") for c in both)
    ref = _bind_duplicates_dropped(ref)
    strip = ("used-bytes", "total-bytes", "total-bytes-privileged")
    assert [{k: v for k, v in fs.items() if k not in strip} for fs in ours] == \
           [{k: v for k, v in fs.items() if k not in strip} for fs in ref]
    for a, b in zip(ours, ref):
        assert ("total-bytes" in a) == ("total-bytes" in b)
        if "total-bytes" not in a:
            continue
        st = os.statvfs(a["mountpoint"])
        assert a["total-bytes"] == b["total-bytes"]  # sizes are stable
        assert abs(a["used-bytes"] - b["used-bytes"]) <= 64 << 20  # other tests write meanwhile
        assert a["total-bytes-privileged"] == st.f_blocks * st.f_frsize  # 10.2 only


def test_disks(both: Tuple[Conn, Conn]) -> None:
    ours, ref = (c.cmd("guest-get-disks") for c in both)
    assert ours == ref


def test_diskstats(both: Tuple[Conn, Conn]) -> None:
    mine, theirs = both
    before = theirs.cmd("guest-get-diskstats")
    ours = mine.cmd("guest-get-diskstats")
    after = theirs.cmd("guest-get-diskstats")
    assert [(e["name"], e["major"], e["minor"], list(e["stats"])) for e in ours] == \
           [(e["name"], e["major"], e["minor"], list(e["stats"])) for e in before]
    # Counters of ours between the reference's readings (ios-pgr is a level, not a
    # counter; a loop device re-attached meanwhile restarts at 0 and is skipped).
    for low, x, high in zip(before, ours, after):
        keys = [k for k in x["stats"] if k != "ios-pgr"]
        if (low["name"], low["minor"]) == (high["name"], high["minor"]) and \
                all(low["stats"][k] <= high["stats"][k] for k in keys):
            for key in keys:
                assert low["stats"][key] <= x["stats"][key] <= high["stats"][key], (x["name"], key)


def test_routes_match_proc(both: Tuple[Conn, Conn]) -> None:
    ours, ref = both
    got = ours.cmd("guest-network-get-route")
    reply = ref.request({"execute": "guest-network-get-route"})  # not in 7.2
    assert reply["error"]["class"] == "CommandNotFound"
    with open("/proc/net/route") as f:
        v4 = [line.split() for line in f.read().splitlines()[1:]]
    with open("/proc/net/ipv6_route") as f:
        v6 = [line.split() for line in f]
    assert len(got) == len(v4) + len(v6)
    for route, fields in zip(got, v4):
        assert route["version"] == 4 and route["iface"] == fields[0]
        assert route["gateway"] == ".".join(str(b) for b in bytes.fromhex(fields[2])[::-1])
    for route, fields in zip(got[len(v4):], v6):
        assert route["version"] == 6 and route["iface"] == fields[9]
        assert route["desprefixlen"] == str(int(fields[1], 16))


# --- interfaces in a private network namespace (labels, peers, tun, many links) ----------

_NETNS_SETUP = """
set -e
ip link set lo up
ip link add br0 type bridge; ip link set br0 up
ip addr add 10.0.0.1/8 dev br0
ip addr add 10.0.0.2/8 dev br0 label br0:1
ip addr add 10.0.0.3/32 dev br0 label br0:foo
ip -6 addr add 2001:db8::1/48 dev br0 nodad
ip link add ifbx type ifb; ip link set ifbx up; ip addr add 10.9.9.9 peer 10.9.9.10/32 dev ifbx
ip link add name veth0 type veth peer name veth1
for i in $(seq 1 30); do ip link add brx$i type bridge; done
ip link del brx7; ip link add brx7 type bridge
ip tuntap add dev tun0 mode tun && ip link set tun0 up && ip addr add 172.16.0.1/30 dev tun0 || true
"""


@pytest.fixture
def netns_agents() -> Iterator[Tuple[Conn, Conn]]:
    """Both agents started inside one fresh network namespace (unshare -n)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("needs root, unshare and ip (iproute2) to build a private network namespace")
    if not os.access(REFERENCE_QGA, os.X_OK):
        pytest.fail(f"{REFERENCE_QGA} is missing: install qemu-guest-agent")
    tmp = tempfile.mkdtemp(prefix="qga-netns-")
    ours_dir, ref_dir = os.path.join(tmp, "ours"), os.path.join(tmp, "ref")
    os.mkdir(ours_dir)
    os.mkdir(ref_dir)
    script = (_NETNS_SETUP + "\n" + " ".join(map(_q, reference_argv(ref_dir))) + " &\n"
              + " ".join(map(_q, ours_argv(ours_dir))) + " &\nwait\n")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    proc = subprocess.Popen(["unshare", "-n", "sh", "-c", script], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "log"), "wb"))
    try:
        conns = (_connect(os.path.join(ours_dir, "sock"), proc, tmp),
                 _connect(os.path.join(ref_dir, "sock"), proc, tmp))
        yield conns
        for c in conns:
            c.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def _q(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def _connect(path: str, proc: "subprocess.Popen[bytes]", tmp: str) -> Conn:
    deadline = time.monotonic() + 60
    while True:
        try:
            return Conn(path, 10)
        except (FileNotFoundError, ConnectionRefusedError):
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(tmp, "log"), "rb") as f:
                    pytest.fail(f"agents in the netns did not start: {f.read().decode(errors='replace')}")
            time.sleep(0.05)


@pytest.mark.root
def test_interfaces_in_netns_match_getifaddrs(netns_agents: Tuple[Conn, Conn]) -> None:
    ours, ref = (c.cmd("guest-network-get-interfaces") for c in netns_agents)
    assert [e["name"] for e in ours] == [e["name"] for e in ref]
    assert {"br0:1", "br0:foo", "tun0", "brx7", "veth0"} <= {e["name"] for e in ours}
    for a, b in zip(ours, ref):
        if a["name"] == "tun0":  # deliberate: no hardware address on a link without one
            assert "hardware-address" not in a and b["hardware-address"] == "00:00:00:00:00:00"
            b = {k: v for k, v in b.items() if k != "hardware-address"}
        assert _stable_iface(a) == _stable_iface(b)
