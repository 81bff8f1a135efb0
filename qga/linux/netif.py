"""Network interfaces in ``getifaddrs()`` order, read over rtnetlink.

glibc's ``getifaddrs`` is itself an rtnetlink client: it dumps RTM_GETLINK,
then RTM_GETADDR (AF_UNSPEC, so IPv4 before IPv6), and lists every link in
dump order followed by every address in dump order.  An IPv4 address carries
its label (``eth0:1``) as its name; other addresses take their link's name.
Doing the same two dumps here reproduces that order exactly, needs neither
ctypes nor psutil (whose ``net_if_addrs`` sorts the entries by family, so
interfaces come out IPv4-first, and has no MAC for an IPv4 label such as
``br0:1``: see the README's "Dependencies"), and gives the link-layer address
of each link in the same pass:
``IFLA_ADDRESS`` is the very ``dev_addr`` that ``SIOCGIFHWADDR`` copies out,
and its absence tells a link without any hardware address (tun, wireguard).
"""
from __future__ import annotations

import errno
import itertools
import operator
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, Iterator, List, Optional, Tuple

from qga.cstring import c_text
from qga.linux.sysfs import read_proc
from qga.log import get_logger

log = get_logger(__name__)

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 18, 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFLA_ADDRESS, IFLA_IFNAME, IFLA_STATS64 = 1, 3, 23
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL = 1, 2, 3

#: Seconds a dump may take before it is given up (a kernel answers in microseconds).
NETLINK_TIMEOUT = 2.0

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")
_MAX_PREFIX = {socket.AF_INET: 32, socket.AF_INET6: 128}


@dataclass
class Link:
    """One RTM_NEWLINK message."""

    index: int
    name: str
    #: Raw IFLA_ADDRESS; None when the link has no hardware address.
    hwaddr: Optional[bytes]
    #: Raw IFLA_STATS64 (struct rtnl_link_stats64); None when the kernel sent none.
    stats64: Optional[bytes] = None


@dataclass
class Address:
    """One AF_INET/AF_INET6 RTM_NEWADDR message."""

    family: int
    index: int
    prefixlen: int
    address: bytes
    label: Optional[str] = None


@dataclass
class Interface:
    """One ``guest-network-get-interfaces`` entry before formatting."""

    name: str
    link_index: int
    #: (family, packed address, prefix) in getifaddrs order.
    addresses: List[Tuple[int, bytes, int]] = field(default_factory=list)


def _request(msg_type: int, seq: int) -> bytes:
    # struct rtgenmsg (AF_UNSPEC), padded: what glibc sends.  The link dump
    # comes with each link's counters (IFLA_STATS64), which replace a read of
    # /proc/net/dev (see link_counters).
    body = b"\0" * 4
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def _dump(sock: socket.socket, msg_type: int, seq: int) -> Iterator[Tuple[int, bytes, int, int]]:
    """Yield (type, buffer, payload offset, end) for every message of one dump."""
    sock.send(_request(msg_type, seq))
    unpack = _NLMSGHDR.unpack_from
    while True:
        try:
            buf = sock.recv(65536)
        except BlockingIOError:  # SO_RCVTIMEO ran out
            raise OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT)) from None
        if not buf:
            raise OSError(0, "netlink socket closed")
        offset, size = 0, len(buf)
        while offset + 16 <= size:
            length, kind, _flags, mseq, _pid = unpack(buf, offset)
            if length < 16:
                raise OSError(0, "malformed netlink message")
            if mseq == seq:
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", buf, offset + 16)
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    return
                yield kind, buf, offset + 16, min(offset + length, size)
            offset += (length + 3) & ~3


_LINK_ATTRS = frozenset((IFLA_IFNAME, IFLA_ADDRESS, IFLA_STATS64))
_ADDR_ATTRS = frozenset((IFA_ADDRESS, IFA_LOCAL, IFA_LABEL))


#: Walks already made, by (wanted types, extent): the index (in 32-bit
#: words) of each rtattr header visited, those headers, and the (type, start,
#: end) of each wanted payload.  A message whose headers at those places are
#: the same would be walked alike, so it is read through the plan.
_PLANS: Dict[Tuple[FrozenSet[int], int],
             Tuple[Callable[[memoryview], Any], Any, Tuple[Tuple[int, int, int], ...]]] = {}
_PLANS_MAX = 64


def _attributes(buf: bytes, pos: int, end: int, wanted: FrozenSet[int]) -> Dict[int, bytes]:
    """type -> payload of the ``wanted`` rtattrs between ``pos`` and ``end``.

    A link carries some forty attributes and three are wanted: only those
    are copied out, and the walk ends once all are found (the kernel sends
    each attribute of a message once; IFLA_STATS64 comes three quarters in).
    Links of one kind have the same layout from call to call: checking the
    headers a previous walk visited (one C-level gather and compare) stands
    for walking them again.
    """
    size = end - pos
    plan = _PLANS.get((wanted, size))
    if plan is not None:
        headers, expected, picks = plan
        if headers(memoryview(buf)[pos:pos + (size & ~3)].cast("I")) == expected:
            return {kind: buf[pos + start:pos + stop] for kind, start, stop in picks}
    found: Dict[int, bytes] = {}
    unpack = _RTATTR.unpack_from
    left = len(wanted)
    first = pos
    visited: List[int] = []
    taken: List[Tuple[int, int, int]] = []
    while pos + 4 <= end:
        length, kind = unpack(buf, pos)
        visited.append((pos - first) >> 2)  # rtattrs are 4-aligned
        if length < 4:
            break
        kind &= 0x3FFF
        if kind in wanted:
            if kind not in found:
                left -= 1
            found[kind] = buf[pos + 4:pos + length]
            taken.append((kind, pos + 4 - first, pos + length - first))
            if not left:
                break
        pos += (length + 3) & ~3
    if visited:
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.clear()
        headers = operator.itemgetter(*visited)
        _PLANS[(wanted, size)] = (headers, headers(memoryview(buf)[first:first + (size & ~3)].cast("I")),
                                  tuple(taken))
    return found


def _parse_link(buf: bytes, off: int, end: int) -> Link:
    _family, _type, index, _flags, _change = _IFINFOMSG.unpack_from(buf, off)
    attrs = _attributes(buf, off + _IFINFOMSG.size, end, _LINK_ATTRS)
    name = attrs.get(IFLA_IFNAME)
    return Link(index, "" if name is None else c_text(name), attrs.get(IFLA_ADDRESS), attrs.get(IFLA_STATS64))


def _parse_addr(buf: bytes, off: int, end: int) -> Optional[Address]:
    family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(buf, off)
    if family not in _MAX_PREFIX:
        return None
    attrs = _attributes(buf, off + _IFADDRMSG.size, end, _ADDR_ATTRS)
    # glibc: IFA_LOCAL is the address when present (IFA_ADDRESS is then the peer).
    addr = attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS))
    if addr is None:
        return None
    label = attrs.get(IFA_LABEL)
    return Address(family, index, min(prefixlen, _MAX_PREFIX[family]), addr,
                   None if label is None else c_text(label))


#: The rtnetlink socket between calls (at most one): creating and binding one
#: costs about as much as a dump.  Only a socket whose dumps ended cleanly is
#: put back, so no reply of an unfinished dump can be waiting in it.
_IDLE: List[socket.socket] = []
_SEQ = itertools.count(1)


def _next_seq() -> int:
    return next(_SEQ) & 0xFFFFFFFF  # nlmsg_seq is 32 bits


def _open_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        # Callers may run on the event loop: a receive timeout, set in the
        # kernel so that each call is not preceded by a poll() as with settimeout().
        seconds = int(NETLINK_TIMEOUT)
        timeval = struct.pack("@ll", seconds, int((NETLINK_TIMEOUT - seconds) * 1e6))
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        except OSError:  # a timeval of another size (32-bit, 64-bit time_t)
            sock.settimeout(NETLINK_TIMEOUT)
        sock.bind((0, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def dump_links_and_addresses() -> Tuple[List[Link], List[Address]]:
    """The two rtnetlink dumps getifaddrs makes, parsed; raises OSError."""
    sock = _IDLE.pop() if _IDLE else _open_socket()
    try:
        links, addrs = _dump_both(sock)
    except BaseException:
        sock.close()
        raise
    _IDLE.append(sock)
    return links, addrs


def _dump_both(sock: socket.socket) -> Tuple[List[Link], List[Address]]:
    """RTM_GETLINK then RTM_GETADDR on ``sock``, parsed."""
    links: List[Link] = []
    for kind, buf, off, end in _dump(sock, RTM_GETLINK, _next_seq()):
        if kind != RTM_NEWLINK:
            continue
        try:
            links.append(_parse_link(buf, off, end))
        except struct.error as exc:  # one bad message must not hide the others
            log.warning("skipping malformed RTM_NEWLINK message: %s", exc)
    addrs: List[Address] = []
    for kind, buf, off, end in _dump(sock, RTM_GETADDR, _next_seq()):
        if kind != RTM_NEWADDR:
            continue
        try:
            addr = _parse_addr(buf, off, end)
        except struct.error as exc:
            log.warning("skipping malformed RTM_NEWADDR message: %s", exc)
            continue
        if addr is not None:
            addrs.append(addr)
    return links, addrs


def group_interfaces(links: List[Link], addrs: List[Address]) -> Tuple[List[Interface], Dict[int, Link]]:
    """One entry per distinct name in first-seen getifaddrs order."""
    by_index = {link.index: link for link in links}
    entries: Dict[str, Interface] = {}
    for link in links:
        if link.name not in entries:
            entries[link.name] = Interface(link.name, link.index)
    for addr in addrs:
        owner = by_index.get(addr.index)
        name = addr.label if addr.label else (owner.name if owner else None)
        if name is None:  # address of a link that vanished between the dumps
            continue
        entry = entries.get(name)
        if entry is None:
            entry = entries[name] = Interface(name, addr.index)
        entry.addresses.append((addr.family, addr.address, addr.prefixlen))
    return list(entries.values()), by_index


def format_mac(hwaddr: bytes) -> str:
    """The first six bytes, zero-padded, as SIOCGIFHWADDR + ``%02x:...`` gives them."""
    return (hwaddr + b"\0" * 6)[:6].hex(":")


_PICK_STATS = operator.itemgetter(0, 1, 2, 3, 8, 9, 10, 11)  # of the 16 counters after "name:"
STAT_KEYS = ("rx-bytes", "rx-packets", "rx-errs", "rx-dropped",
             "tx-bytes", "tx-packets", "tx-errs", "tx-dropped")


def parse_net_dev(text: str) -> Dict[str, Dict[str, int]]:
    """``/proc/net/dev`` as name -> GuestNetworkInterfaceStat (schema order)."""
    stats: Dict[str, Dict[str, int]] = {}
    for line in text.splitlines():
        name, sep, rest = line.strip().partition(":")
        if not sep:
            continue
        if name in stats:  # the first line of a name counts
            continue
        cols = rest.split()
        if len(cols) < 16:
            continue
        try:
            stats[name] = dict(zip(STAT_KEYS, map(int, _PICK_STATS(cols))))
        except ValueError:
            continue
    return stats


#: The first 16 counters of struct rtnl_link_stats64 (rx_packets ... rx_missed_errors).
_STATS64 = struct.Struct("=16Q")
_U64 = (1 << 64) - 1


def link_counters(links: List[Link]) -> Optional[Dict[str, Dict[str, int]]]:
    """name -> GuestNetworkInterfaceStat from the link dump; None if a link came without counters.

    /proc/net/dev prints the same dev_get_stats() counters, its receive
    "drop" column being rx_dropped + rx_missed_errors (in u64).
    """
    stats: Dict[str, Dict[str, int]] = {}
    for link in links:
        if link.stats64 is None or len(link.stats64) < _STATS64.size:
            return None  # a kernel without IFLA_STATS64: read /proc/net/dev
        (rx_packets, tx_packets, rx_bytes, tx_bytes, rx_errors, tx_errors, rx_dropped, tx_dropped,
         *_, rx_missed) = _STATS64.unpack_from(link.stats64)
        stats.setdefault(link.name, dict(zip(STAT_KEYS, (
            rx_bytes, rx_packets, rx_errors, (rx_dropped + rx_missed) & _U64,
            tx_bytes, tx_packets, tx_errors, tx_dropped))))
    return stats


def read_net_dev(path: str = "/proc/net/dev") -> Dict[str, Dict[str, int]]:
    """Per-interface counters; empty when the file cannot be read (qemu-ga omits them)."""
    try:
        data = read_proc(path)
    except OSError as exc:  # qemu-ga's getline loop ends at a read error too
        log.debug("failed to read network stats %s: %s", path, exc.strerror)
        return {}
    return parse_net_dev(data.decode("utf-8", "surrogateescape"))
