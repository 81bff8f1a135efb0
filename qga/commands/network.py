"""guest-network-get-interfaces and guest-network-get-route.

Interfaces follow getifaddrs() order (see :mod:`qga.linux.netif` for why
rtnetlink is read directly).  Beyond qemu-ga: ``interface_exclude`` globs in
the config hide interfaces (``veth*``, ``docker*``; a label ``docker0:1`` is
hidden by a glob matching ``docker0`` too), and a link without any hardware
address (tun, wireguard) has no ``hardware-address`` instead of qemu-ga's
``00:00:00:00:00:00``.
"""
from __future__ import annotations

import errno
import fnmatch
import socket
from typing import Any, Dict, List, Sequence

from qga.context import Context
from qga.errors import QgaError, strerror
from qga.linux import netif, on_linux
from qga.linux.routes import DEFAULT_FILES, read_routes
from qga.command import command
from qga.log import get_logger

log = get_logger(__name__)

#: Overridable by tests: the IPv4 and IPv6 route tables.
ROUTE_FILES = DEFAULT_FILES

_TYPES: Dict[int, str] = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}


def _excluded(name: str, globs: Sequence[str]) -> bool:
    base = name.split(":", 1)[0]
    return any(fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(base, g) for g in globs)


def build_interfaces(links: List[netif.Link], addrs: List[netif.Address],
                     stats: Dict[str, Dict[str, int]], exclude: Sequence[str] = ()) -> List[Dict[str, Any]]:
    """GuestNetworkInterface list (schema member order) from parsed dumps."""
    entries, by_index = netif.group_interfaces(links, addrs)
    result: List[Dict[str, Any]] = []
    for entry in entries:
        if exclude and _excluded(entry.name, exclude):
            continue
        try:
            out: Dict[str, Any] = {"name": entry.name}
            link = by_index.get(entry.link_index)
            if link is not None and link.hwaddr is not None:
                out["hardware-address"] = netif.format_mac(link.hwaddr)
            if entry.addresses:
                out["ip-addresses"] = [
                    {"ip-address": socket.inet_ntop(family, packed),
                     "ip-address-type": _TYPES[family], "prefix": prefix}
                    for family, packed, prefix in entry.addresses]
                if entry.name in stats:
                    out["statistics"] = dict(stats[entry.name])
        except (ValueError, OSError) as exc:  # one bad interface must not hide the others
            log.warning("guest-network-get-interfaces: skipping %s: %s", entry.name, exc)
            continue
        result.append(out)
    return result


# Inline (event-loop thread): an rtnetlink dump and a procfs read never wait
# on devices, and the netlink socket has a timeout; the worker handoff would
# cost more than the work.
@command("guest-network-get-interfaces", order=22, group="info", inline=True, available=on_linux)
def get_interfaces(ctx: Context) -> List[Dict[str, Any]]:
    """Interfaces, their MAC, IP addresses and counters."""
    try:
        links, addrs = netif.dump_links_and_addresses()
    except OSError as exc:
        code = exc.errno or (errno.ETIMEDOUT if isinstance(exc, socket.timeout) else errno.EIO)
        raise QgaError(f"getifaddrs failed: {strerror(code)}") from None
    # Counters are only reported for interfaces that have an address.
    stats = (netif.link_counters(links) or netif.read_net_dev()) if addrs else {}
    exclude = list(ctx.config.interface_exclude)
    return build_interfaces(links, addrs, stats, exclude)


@command("guest-network-get-route", order=44, group="info", inline=True, available=on_linux)
def get_route(ctx: Context) -> List[Dict[str, Any]]:
    """IPv4 then IPv6 routes from /proc/net."""
    try:
        return read_routes(*ROUTE_FILES)
    except OSError as exc:
        raise QgaError(f'open("{exc.filename}"): {strerror(exc.errno or 0)}') from None
