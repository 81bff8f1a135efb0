"""The routing tables as ``guest-network-get-route`` reports them.

``/proc/net/route`` (header line, host-order hex addresses, decimal counters)
and ``/proc/net/ipv6_route`` (no header, 32-digit hex addresses, hex prefix
lengths and counters).  Field conversions follow qemu-ga 10.2 exactly: IPv6
prefix lengths become *decimal strings*, the IPv6 hex metric/refcnt/use are C
``int`` (0xffffffff prints as -1), and the IPv6 flags go through a C ``int``
into a uint64, so a set top bit sign-extends (RTF_LOCAL routes show
18446744071564165121 for 0x80200001).
"""
from __future__ import annotations

import socket
from typing import Any, Dict, List, Optional

_U32 = 0xFFFFFFFF
DEFAULT_FILES = ("/proc/net/route", "/proc/net/ipv6_route")


def _int32(value: int) -> int:
    """A 32-bit pattern read into a C ``int``."""
    value &= _U32
    return value - (1 << 32) if value & 0x80000000 else value


def _dotted(value: int) -> str:
    """A host-order (little-endian) hex word as dotted quad."""
    return "%d.%d.%d.%d" % (value & 0xFF, (value >> 8) & 0xFF, (value >> 16) & 0xFF, (value >> 24) & 0xFF)


def _ipv6(hex32: str) -> Optional[str]:
    if len(hex32) != 32:
        return None
    try:
        return socket.inet_ntop(socket.AF_INET6, bytes.fromhex(hex32))
    except ValueError:
        return None


def _hex(text: str) -> int:
    return int(text, 16) & _U32


def parse_ipv4_routes(text: str) -> List[Dict[str, Any]]:
    """Entries of ``/proc/net/route`` text (the first line is the header)."""
    routes: List[Dict[str, Any]] = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 11:
            continue
        try:
            dest, gateway, flags, mask = _hex(f[1]), _hex(f[2]), _hex(f[3]), _hex(f[7])
            refcnt, use, metric, mtu, window, irtt = (int(x) for x in (f[4], f[5], f[6], f[8], f[9], f[10]))
        except ValueError:
            continue
        # GuestNetworkRoute schema order.
        routes.append({
            "iface": f[0], "destination": _dotted(dest), "metric": metric,
            "gateway": _dotted(gateway), "mask": _dotted(mask), "irtt": irtt,
            "flags": flags, "refcnt": refcnt, "use": use, "window": window, "mtu": mtu,
            "version": 4,
        })
    return routes


def parse_ipv6_routes(text: str) -> List[Dict[str, Any]]:
    """Entries of ``/proc/net/ipv6_route`` text (no header)."""
    routes: List[Dict[str, Any]] = []
    for line in text.splitlines():
        f = line.split()
        if len(f) < 10:
            continue
        dest, source, nexthop = _ipv6(f[0]), _ipv6(f[2]), _ipv6(f[4])
        if dest is None or source is None or nexthop is None:
            continue
        try:
            dplen, splen, metric, refcnt, use, flags = (
                _int32(_hex(x)) for x in (f[1], f[3], f[5], f[6], f[7], f[8]))
        except ValueError:
            continue
        routes.append({
            "iface": f[9], "destination": dest, "metric": metric,
            "flags": flags & 0xFFFFFFFFFFFFFFFF, "refcnt": refcnt, "use": use,
            "desprefixlen": str(dplen), "source": source, "srcprefixlen": str(splen),
            "nexthop": nexthop, "version": 6,
        })
    return routes


def _read(path: str) -> str:
    """The file's text; an OSError naming ``path`` (a failed read() names none) when unreadable."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None


def read_routes(route: str = DEFAULT_FILES[0], ipv6: str = DEFAULT_FILES[1]) -> List[Dict[str, Any]]:
    """IPv4 then IPv6 routes; fails as a whole (OSError) when either file is unreadable."""
    v4 = parse_ipv4_routes(_read(route))
    return v4 + parse_ipv6_routes(_read(ipv6))
