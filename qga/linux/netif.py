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

import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

from qga.cstring import c_text
from qga.linux.sysfs import read_fd
from qga.log import get_logger

log = get_logger(__name__)

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 18, 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFLA_ADDRESS, IFLA_IFNAME, IFLA_EXT_MASK = 1, 3, 29
RTEXT_FILTER_SKIP_STATS = 1 << 3
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
    if msg_type == RTM_GETLINK:
        # ifinfomsg + IFLA_EXT_MASK(RTEXT_FILTER_SKIP_STATS): the kernel then
        # leaves out the per-link statistics blocks (a third of the dump time);
        # counters come from /proc/net/dev as in qemu-ga.  Older kernels ignore
        # the bit.  The dump order does not depend on it.
        body = (_IFINFOMSG.pack(0, 0, 0, 0, 0) + _RTATTR.pack(8, IFLA_EXT_MASK)
                + struct.pack("=I", RTEXT_FILTER_SKIP_STATS))
    else:
        body = b"\0" * 4  # struct rtgenmsg (AF_UNSPEC), padded: what glibc sends
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def _dump(sock: socket.socket, msg_type: int, seq: int) -> Iterator[Tuple[int, bytes, int, int]]:
    """Yield (type, buffer, payload offset, end) for every message of one dump."""
    sock.send(_request(msg_type, seq))
    unpack = _NLMSGHDR.unpack_from
    while True:
        buf = sock.recv(65536)
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


def _attributes(buf: bytes, pos: int, end: int) -> Iterator[Tuple[int, bytes]]:
    """(type, payload) of each rtattr between ``pos`` and ``end``."""
    unpack = _RTATTR.unpack_from
    while pos + 4 <= end:
        length, kind = unpack(buf, pos)
        if length < 4:
            return
        yield kind & 0x3FFF, buf[pos + 4:pos + length]
        pos += (length + 3) & ~3


def _parse_link(buf: bytes, off: int, end: int) -> Link:
    _family, _type, index, _flags, _change = _IFINFOMSG.unpack_from(buf, off)
    name, hwaddr = "", None
    for kind, payload in _attributes(buf, off + _IFINFOMSG.size, end):
        if kind == IFLA_IFNAME:
            name = c_text(payload)
        elif kind == IFLA_ADDRESS:
            hwaddr = payload
    return Link(index, name, hwaddr)


def _parse_addr(buf: bytes, off: int, end: int) -> Optional[Address]:
    family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(buf, off)
    if family not in _MAX_PREFIX:
        return None
    address = local = label = None
    for kind, payload in _attributes(buf, off + _IFADDRMSG.size, end):
        if kind == IFA_ADDRESS:
            address = payload
        elif kind == IFA_LOCAL:
            local = payload
        elif kind == IFA_LABEL:
            label = c_text(payload)
    # glibc: IFA_LOCAL is the address when present (IFA_ADDRESS is then the peer).
    addr = local if local is not None else address
    if addr is None:
        return None
    return Address(family, index, min(prefixlen, _MAX_PREFIX[family]), addr, label)


def dump_links_and_addresses() -> Tuple[List[Link], List[Address]]:
    """The two rtnetlink dumps getifaddrs makes, parsed; raises OSError."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE) as sock:
        sock.settimeout(NETLINK_TIMEOUT)  # callers may run on the event loop
        sock.bind((0, 0))
        links: List[Link] = []
        for kind, buf, off, end in _dump(sock, RTM_GETLINK, 1):
            if kind != RTM_NEWLINK:
                continue
            try:
                links.append(_parse_link(buf, off, end))
            except struct.error as exc:  # one bad message must not hide the others
                log.warning("skipping malformed RTM_NEWLINK message: %s", exc)
        addrs: List[Address] = []
        for kind, buf, off, end in _dump(sock, RTM_GETADDR, 2):
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
    raw = (hwaddr + b"\0" * 6)[:6]
    return ":".join("%02x" % b for b in raw)


_STAT_COLUMNS = (0, 1, 2, 3, 8, 9, 10, 11)
STAT_KEYS = ("rx-bytes", "rx-packets", "rx-errs", "rx-dropped",
             "tx-bytes", "tx-packets", "tx-errs", "tx-dropped")


def parse_net_dev(text: str) -> Dict[str, Dict[str, int]]:
    """``/proc/net/dev`` as name -> GuestNetworkInterfaceStat (schema order)."""
    stats: Dict[str, Dict[str, int]] = {}
    for line in text.splitlines():
        name, sep, rest = line.strip().partition(":")
        if not sep:
            continue
        cols = rest.split()
        if len(cols) < 16:
            continue
        try:
            values = [int(cols[i]) for i in _STAT_COLUMNS]
        except ValueError:
            continue
        stats.setdefault(name, dict(zip(STAT_KEYS, values)))
    return stats


def read_net_dev(path: str = "/proc/net/dev") -> Dict[str, Dict[str, int]]:
    """Per-interface counters; empty when the file cannot be read (qemu-ga omits them)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        log.debug("failed to open network stats %s: %s", path, exc.strerror)
        return {}
    try:
        data = read_fd(fd)
    finally:
        os.close(fd)
    return parse_net_dev(data.decode("utf-8", "surrogateescape"))
