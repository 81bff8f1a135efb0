"""qemu-ga-py inside a real QEMU guest, driven from the host like libvirt does.

Same scenarios as test_vm_reference.py (which proves the harness with Debian's
qemu-ga 7.2), plus the state-changing and power scenarios, and side-by-side
comparisons of replies with the reference agent in an identical guest.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable, Dict, List

import pytest

from tests.vm import scenarios, vmlib

pytestmark = pytest.mark.vm


def test_boot_and_libvirt_sync(py_guest: vmlib.Guest) -> None:
    assert py_guest.boot_seconds is not None
    scenarios.check_libvirt_sync(py_guest)


def test_delimited_sync(py_guest: vmlib.Guest) -> None:
    scenarios.check_delimited_sync(py_guest)


def test_guest_info(py_guest: vmlib.Guest) -> None:
    scenarios.check_guest_info(py_guest)


def test_fsinfo_data_disks(py_guest: vmlib.Guest) -> None:
    scenarios.check_fsinfo(py_guest)


def test_get_disks_partition_dependency(py_guest: vmlib.Guest) -> None:
    scenarios.check_disks(py_guest)


def test_interfaces_eth0(py_guest: vmlib.Guest) -> None:
    scenarios.check_interfaces(py_guest)


def test_osinfo(py_guest: vmlib.Guest) -> None:
    scenarios.check_osinfo(py_guest)


def test_exec_and_files(py_guest: vmlib.Guest) -> None:
    scenarios.check_exec_and_files(py_guest)


def test_freeze_thaw_blocks_writer(py_guest: vmlib.Guest) -> None:
    scenarios.check_freeze_thaw(py_guest)


def test_host_detach_reattach(py_guest: vmlib.Guest) -> None:
    scenarios.check_detach_reattach(py_guest)


def test_set_vcpus(py_guest: vmlib.Guest) -> None:
    scenarios.check_set_vcpus(py_guest)


def test_set_time(py_guest: vmlib.Guest) -> None:
    scenarios.check_set_time(py_guest)


def test_set_user_password(py_guest: vmlib.Guest) -> None:
    scenarios.check_set_user_password(py_guest)


# -- side by side with qemu-ga 7.2 in an identical guest -------------------------------------


def _norm_fsinfo(fs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = copy.deepcopy(fs)
    for f in out:
        f.pop("used-bytes", None)            # changes as tests write
        f.pop("total-bytes-privileged", None)  # master-only field
    return sorted(out, key=lambda f: f["mountpoint"])


def _norm_ifaces(ifs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = copy.deepcopy(ifs)
    for i in out:
        i.pop("statistics", None)
        i["ip-addresses"] = sorted(i.get("ip-addresses", []), key=lambda a: a["ip-address"])
    return sorted(out, key=lambda i: i["name"])


@pytest.mark.parametrize("command,normalise", [
    ("guest-get-fsinfo", _norm_fsinfo),
    ("guest-get-disks", lambda d: sorted(d, key=lambda x: x["name"])),
    ("guest-network-get-interfaces", _norm_ifaces),
    ("guest-get-osinfo", lambda x: x),
    ("guest-get-vcpus", lambda v: sorted(v, key=lambda x: x["logical-id"])),
    ("guest-get-host-name", lambda x: x),
    ("guest-get-timezone", lambda x: x),
    ("guest-fsfreeze-status", lambda x: x),
])
def test_same_reply_as_reference(py_guest: vmlib.Guest, ref_guest: vmlib.Guest, command: str,
                                 normalise: Callable[[Any], Any]) -> None:
    fetch = _settled_interfaces if command == "guest-network-get-interfaces" else \
        (lambda guest: guest.agent.execute(command))
    ours = normalise(fetch(py_guest))
    ref = normalise(fetch(ref_guest))
    assert ours == ref


def _settled_interfaces(guest: vmlib.Guest, timeout: float = 30.0) -> List[Dict[str, Any]]:
    """Interfaces once eth0's IPv6 link-local address exists.

    The kernel adds it a moment after the link comes up (duplicate address
    detection), so two guests booted at different times can differ for a few
    seconds; compare them only when both have settled.
    """
    deadline = time.monotonic() + timeout
    while True:
        ifs = guest.agent.execute("guest-network-get-interfaces")
        eth0 = next((i for i in ifs if i["name"] == "eth0"), {})
        if any(a["ip-address"].startswith("fe80:") for a in eth0.get("ip-addresses", [])):
            return ifs
        if time.monotonic() > deadline:
            raise AssertionError(f"eth0 never got its IPv6 link-local address: {ifs}")
        time.sleep(0.5)


def test_guest_info_matches_reference(py_guest: vmlib.Guest, ref_guest: vmlib.Guest) -> None:
    ours = {c["name"]: c for c in py_guest.agent.execute("guest-info")["supported_commands"]}
    ref = {c["name"]: c for c in ref_guest.agent.execute("guest-info")["supported_commands"]}
    for name in sorted(set(ours) & set(ref)):
        assert ours[name]["success-response"] == ref[name]["success-response"], name
    assert scenarios.CORE_COMMANDS <= set(ours)


# -- power: one guest per agent booted from an ext4 root (see conftest) ----------------------------


# Order matters: suspend and reboot leave the power guest running, shutdown ends it.


def test_suspend_ram_wakeup(py_power_guest: vmlib.Guest) -> None:
    scenarios.check_suspend_ram(py_power_guest)


def test_reboot_reset_event(py_power_guest: vmlib.Guest) -> None:
    scenarios.check_reboot(py_power_guest)


def test_shutdown_event(py_power_guest: vmlib.Guest) -> None:
    scenarios.check_shutdown(py_power_guest)
