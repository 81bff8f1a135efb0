"""Interface and route readers: rtnetlink parsing, getifaddrs grouping, /proc/net files."""
from __future__ import annotations

import errno
import os
import socket
import struct
from pathlib import Path
from typing import Any, List

import pytest

from qga.commands import network
from qga.errors import QgaError
from qga.linux import netif, routes

DATA = Path(__file__).resolve().parents[1] / "data" / "net"
AF4, AF6 = socket.AF_INET, socket.AF_INET6


def rtattr(kind: int, data: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def nlmsg(kind: int, seq: int, payload: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), kind, 2, seq, 0) + payload


# --- netlink message parsing ----------------------------------------------------------

def test_parse_link_message() -> None:
    body = (struct.pack("=BxHiII", 0, 1, 7, 0, 0) + rtattr(netif.IFLA_IFNAME, b"eth7\0")
            + rtattr(4, struct.pack("=I", 1500)) + rtattr(netif.IFLA_ADDRESS, b"\x02\x00\x00\xAA\xBB\xCC"))
    msg = nlmsg(netif.RTM_NEWLINK, 1, body)
    link = netif._parse_link(msg, 16, len(msg))
    assert link == netif.Link(7, "eth7", b"\x02\x00\x00\xAA\xBB\xCC")
    body = struct.pack("=BxHiII", 0, 0xFFFE, 8, 0, 0) + rtattr(netif.IFLA_IFNAME, b"tun0\0")
    msg = nlmsg(netif.RTM_NEWLINK, 1, body)
    assert netif._parse_link(msg, 16, len(msg)).hwaddr is None  # no hardware address at all


def test_parse_link_through_a_plan_only_where_the_layout_is_the_same() -> None:
    """A walk is replayed for a message of the same extent only if every header it visited is the same."""
    head = struct.pack("=BxHiII", 0, 1, 7, 0, 0)
    mtu = rtattr(4, struct.pack("=I", 1500))
    first = nlmsg(netif.RTM_NEWLINK, 1, head + rtattr(netif.IFLA_IFNAME, b"eth7\0") + mtu
                  + rtattr(netif.IFLA_ADDRESS, b"\x02\x00\x00\xAA\xBB\xCC"))
    same_layout = nlmsg(netif.RTM_NEWLINK, 1, head + rtattr(netif.IFLA_IFNAME, b"eth8\0") + mtu
                        + rtattr(netif.IFLA_ADDRESS, b"\x02\x00\x00\xAA\xBB\xDD"))
    reordered = nlmsg(netif.RTM_NEWLINK, 1, head + mtu + rtattr(netif.IFLA_IFNAME, b"eth9\0")
                      + rtattr(netif.IFLA_ADDRESS, b"\x02\x00\x00\xAA\xBB\xEE"))
    longer_name = nlmsg(netif.RTM_NEWLINK, 1, head + rtattr(netif.IFLA_IFNAME, b"eth10\0")
                        + rtattr(netif.IFLA_ADDRESS, b"\x02\x00\x00\xAA\xBB\xFF") + b"\0" * 8)
    assert len({len(first), len(same_layout), len(reordered), len(longer_name)}) == 1
    netif._PLANS.clear()
    for msg, name, mac in [(first, "eth7", 0xCC), (same_layout, "eth8", 0xDD), (reordered, "eth9", 0xEE),
                           (longer_name, "eth10", 0xFF), (first, "eth7", 0xCC)]:
        link = netif._parse_link(msg, 16, len(msg))
        assert (link.name, link.hwaddr) == (name, b"\x02\x00\x00\xAA\xBB" + bytes([mac]))


def test_link_counters_are_those_of_proc_net_dev() -> None:
    # rtnl_link_stats64: rx_packets, tx_packets, rx_bytes, tx_bytes, rx_errors, tx_errors,
    # rx_dropped, tx_dropped, multicast, collisions, 5 detailed rx errors, rx_missed_errors, ...
    counters = [11, 12, 13, 14, 15, 16, (1 << 64) - 2, 18, 19, 20, 21, 22, 23, 24, 25, 5] + [0] * 9
    body = (struct.pack("=BxHiII", 0, 1, 7, 0, 0) + rtattr(netif.IFLA_IFNAME, b"eth7\0")
            + rtattr(netif.IFLA_STATS64, struct.pack("=25Q", *counters)))
    msg = nlmsg(netif.RTM_NEWLINK, 1, body)
    link = netif._parse_link(msg, 16, len(msg))
    assert netif.link_counters([link]) == {"eth7": {
        "rx-bytes": 13, "rx-packets": 11, "rx-errs": 15, "rx-dropped": 3,  # dropped + missed, in u64
        "tx-bytes": 14, "tx-packets": 12, "tx-errs": 16, "tx-dropped": 18}}
    # A link without them (a kernel before IFLA_STATS64): /proc/net/dev is read instead.
    assert netif.link_counters([link, netif.Link(8, "eth8", None)]) is None


def test_live_link_counters_match_proc_net_dev() -> None:
    before = netif.read_net_dev()
    links, _ = netif.dump_links_and_addresses()
    after = netif.read_net_dev()
    counters = netif.link_counters(links)
    assert counters is not None and set(counters) == set(before) == set(after)
    for name, values in counters.items():
        assert list(values) == list(netif.STAT_KEYS)
        for key, value in values.items():  # counters only grow: ours lie between the two readings
            assert before[name][key] <= value <= after[name][key], (name, key)


def test_parse_addr_local_wins_over_peer_and_labels() -> None:
    body = (struct.pack("=BBBBI", AF4, 32, 0, 0, 3) + rtattr(netif.IFA_ADDRESS, bytes([10, 9, 9, 10]))
            + rtattr(netif.IFA_LOCAL, bytes([10, 9, 9, 9])) + rtattr(netif.IFA_LABEL, b"eth0:1\0"))
    msg = nlmsg(netif.RTM_NEWADDR, 2, body)
    assert netif._parse_addr(msg, 16, len(msg)) == netif.Address(AF4, 3, 32, bytes([10, 9, 9, 9]), "eth0:1")
    body = struct.pack("=BBBBI", AF6, 200, 0, 0, 3) + rtattr(netif.IFA_ADDRESS, b"\xfe\x80" + b"\0" * 14)
    msg = nlmsg(netif.RTM_NEWADDR, 2, body)
    assert netif._parse_addr(msg, 16, len(msg)).prefixlen == 128  # glibc caps the netmask
    body = struct.pack("=BBBBI", 17, 0, 0, 0, 3) + rtattr(1, b"x")
    msg = nlmsg(netif.RTM_NEWADDR, 2, body)
    assert netif._parse_addr(msg, 16, len(msg)) is None  # not INET/INET6


# --- grouping and formatting ------------------------------------------------------------

LINKS = [netif.Link(1, "lo", b"\0" * 6), netif.Link(4, "eth0", b"\x02\xfc\x00\x00\x00\x01"),
         netif.Link(2, "ifb0", b"\x42\x43\x06\x8e\x9c\x0a"), netif.Link(9, "tun0", None),
         netif.Link(11, "ib0", bytes(range(20))), netif.Link(12, "ipip0", bytes([192, 0, 2, 1]))]
ADDRS = [
    netif.Address(AF4, 1, 8, bytes([127, 0, 0, 1]), "lo"),
    netif.Address(AF4, 4, 24, bytes([192, 0, 2, 2]), "eth0"),
    netif.Address(AF4, 4, 8, bytes([10, 0, 0, 2]), "eth0:1"),
    netif.Address(AF4, 9, 30, bytes([172, 16, 0, 1]), "tun0"),
    netif.Address(AF4, 99, 24, bytes([10, 1, 1, 1]), None),  # link vanished between the dumps
    netif.Address(AF6, 1, 128, b"\0" * 15 + b"\1"),
    netif.Address(AF6, 4, 64, bytes.fromhex("fe8000000000000000fc00fffe000001")),
]
STATS = netif.parse_net_dev((DATA / "host-dev").read_text() + " tun0: 1 2 3 4 0 0 0 0 5 6 7 8 0 0 0 0\n")


def test_interfaces_in_getifaddrs_order() -> None:
    got = network.build_interfaces(LINKS, ADDRS, STATS)
    assert [e["name"] for e in got] == ["lo", "eth0", "ifb0", "tun0", "ib0", "ipip0", "eth0:1"]
    lo, eth0, ifb0, tun0, ib0, ipip0, label = got
    assert lo["hardware-address"] == "00:00:00:00:00:00"
    assert lo["ip-addresses"] == [
        {"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8},
        {"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128}]
    assert eth0["ip-addresses"][1] == {"ip-address": "fe80::fc:ff:fe00:1", "ip-address-type": "ipv6",
                                       "prefix": 64}
    assert list(eth0) == ["name", "hardware-address", "ip-addresses", "statistics"]
    assert list(eth0["statistics"]) == list(netif.STAT_KEYS)
    assert eth0["statistics"] == STATS["eth0"]
    assert ifb0 == {"name": "ifb0", "hardware-address": "42:43:06:8e:9c:0a"}  # no IP: no statistics
    assert "hardware-address" not in tun0 and tun0["statistics"]["tx-dropped"] == 8
    assert ib0["hardware-address"] == "00:01:02:03:04:05"  # first 6 bytes, as SIOCGIFHWADDR + %02x
    assert ipip0["hardware-address"] == "c0:00:02:01:00:00"  # 4-byte address, zero padded
    # a label: its link's MAC, its own address, no statistics (/proc/net/dev has no eth0:1)
    assert label == {"name": "eth0:1", "hardware-address": "02:fc:00:00:00:01",
                     "ip-addresses": [{"ip-address": "10.0.0.2", "ip-address-type": "ipv4", "prefix": 8}]}


def test_interface_exclude_globs() -> None:
    got = network.build_interfaces(LINKS, ADDRS, STATS, exclude=["eth0", "ib*"])
    assert [e["name"] for e in got] == ["lo", "ifb0", "tun0", "ipip0"]  # eth0:1 goes with eth0
    got = network.build_interfaces(LINKS, ADDRS, STATS, exclude=["eth0:*"])
    assert "eth0:1" not in [e["name"] for e in got] and "eth0" in [e["name"] for e in got]


def test_parse_net_dev() -> None:
    stats = netif.parse_net_dev((DATA / "host-dev").read_text())
    assert set(stats) == {"lo", "ifb0", "ifb1", "eth0"}
    assert stats["lo"] == {"rx-bytes": 3193, "rx-packets": 29, "rx-errs": 0, "rx-dropped": 0,
                           "tx-bytes": 3193, "tx-packets": 29, "tx-errs": 0, "tx-dropped": 0}
    assert netif.parse_net_dev("eth9: 1 2 3\n") == {}  # fewer than 16 counters
    assert netif.read_net_dev("/nonexistent") == {}


# --- live ---------------------------------------------------------------------------------

def test_live_dump_matches_sysfs() -> None:
    links, addrs = netif.dump_links_and_addresses()
    assert sorted(link.name for link in links) == sorted(os.listdir("/sys/class/net"))
    for link in links:
        with open(f"/sys/class/net/{link.name}/ifindex") as f:
            assert int(f.read()) == link.index
        with open(f"/sys/class/net/{link.name}/address") as f:
            text = f.read().strip()
        if link.hwaddr is not None:
            assert link.hwaddr.hex(":") == text
    assert any(a.family == AF4 and a.address == bytes([127, 0, 0, 1]) for a in addrs)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_live_dumps_share_one_socket_until_one_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    first = netif.dump_links_and_addresses()
    fds = _fds()
    again = [netif.dump_links_and_addresses() for _ in range(3)]
    assert _fds() == fds  # the socket of a clean dump is kept and taken again, none leaked
    assert all([link.name for link in a[0]] == [link.name for link in first[0]] for a in again)
    assert len(netif._IDLE) == 1
    kept = netif._IDLE[0]

    def failing(sock: socket.socket, msg_type: int, seq: int) -> Any:
        yield from ()
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(netif, "_dump", failing)
    with pytest.raises(OSError):
        netif.dump_links_and_addresses()
    assert kept.fileno() == -1 and not netif._IDLE  # a failed dump's socket is closed, not put back
    monkeypatch.undo()
    assert [link.name for link in netif.dump_links_and_addresses()[0]] == [link.name for link in first[0]]


def test_a_dump_without_answer_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netif, "NETLINK_TIMEOUT", 0.05)
    sock = netif._open_socket()
    try:
        # The kernel answers NLMSG_NOOP without NLM_F_ACK with nothing at all.
        with pytest.raises(OSError) as err:
            list(netif._dump(sock, 1, 77))
        assert err.value.errno == errno.ETIMEDOUT
    finally:
        sock.close()


def test_live_handler(ctx: Any) -> None:
    got = network.get_interfaces(ctx)
    names = [e["name"] for e in got]
    assert "lo" in names
    for e in got:
        for a in e.get("ip-addresses", []):
            assert type(a["prefix"]) is int and a["ip-address-type"] in ("ipv4", "ipv6")
            assert "%" not in a["ip-address"]
        assert ("statistics" in e) <= ("ip-addresses" in e)
    ctx.config.interface_exclude = ["l?"]
    assert "lo" not in [e["name"] for e in network.get_interfaces(ctx)]


# --- routes -----------------------------------------------------------------------------

def test_ipv4_routes() -> None:
    got = routes.parse_ipv4_routes((DATA / "synthetic-route").read_text())
    assert got[0] == {"iface": "eth0", "destination": "0.0.0.0", "metric": 100, "gateway": "192.0.2.1",
                      "mask": "0.0.0.0", "irtt": 0, "flags": 3, "refcnt": 0, "use": 0, "window": 0,
                      "mtu": 0, "version": 4}
    assert got[1]["destination"] == "192.168.0.0" and got[1]["mask"] == "255.255.255.0"
    assert (got[1]["refcnt"], got[1]["use"], got[1]["mtu"], got[1]["irtt"]) == (2, 7, 1500, 3)


def test_ipv6_routes_qemu_conversions() -> None:
    got = routes.parse_ipv6_routes((DATA / "synthetic-ipv6_route").read_text())
    assert len(got) == 3  # bad hex and short lines are skipped
    local, net, default = got
    assert local["flags"] == 0xFFFFFFFF80200001  # C int -> uint64 sign extension (RTF_LOCAL)
    assert local["desprefixlen"] == "128" and local["srcprefixlen"] == "0"
    assert net == {"iface": "eth0", "destination": "2001:db8::", "metric": 1024, "flags": 3, "refcnt": 5,
                   "use": 42, "desprefixlen": "48", "source": "2001:db8::", "srcprefixlen": "16",
                   "nexthop": "fe80::1", "version": 6}
    assert default["metric"] == -1 and default["destination"] == "::"


def test_routes_files_and_errors(tmp_path: Path, ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    got = routes.read_routes(str(DATA / "host-route"), str(DATA / "host-ipv6_route"))
    assert [r["version"] for r in got] == [4] * 2 + [6] * 8
    with pytest.raises(FileNotFoundError) as missing:
        routes.read_routes(str(DATA / "host-route"), str(tmp_path / "ipv6_route"))
    assert missing.value.filename == str(tmp_path / "ipv6_route")
    monkeypatch.setattr(network, "ROUTE_FILES", (str(DATA / "host-route"), str(tmp_path / "ipv6_route")))
    with pytest.raises(QgaError) as exc:
        network.get_route(ctx)
    assert exc.value.desc == f'open("{tmp_path / "ipv6_route"}"): No such file or directory'


def test_routes_live_match_proc() -> None:
    got = routes.read_routes()
    with open("/proc/net/route") as f:
        v4: List[str] = f.read().splitlines()[1:]
    with open("/proc/net/ipv6_route") as f:
        v6 = f.read().splitlines()
    assert len(got) == len(v4) + len(v6)
    assert [r["iface"] for r in got] == [line.split()[0] for line in v4] + [line.split()[9] for line in v6]


@pytest.fixture
def ctx(tmp_path: Path) -> Any:
    from qga.config import Config
    from qga.context import Context
    from qga.loop import Loop
    from qga.registry import Registry
    from qga.state import StateDir
    return Context(Config(), StateDir(str(tmp_path)), Loop(), Registry([]))
