"""The VM harness proven against Debian's qemu-ga 7.2 running inside the guest.

These tests pin down the harness itself (boot, channel, QMP events, disks,
network, freeze, power) with a known-good agent, so that a failure in
test_vm_agent.py points at qemu-ga-py and not at the tier.
"""

from __future__ import annotations

import pytest

from tests.vm import scenarios, vmlib

pytestmark = pytest.mark.vm


def test_boot_and_libvirt_sync(ref_guest: vmlib.Guest) -> None:
    assert ref_guest.boot_seconds is not None and ref_guest.boot_seconds < vmlib.DEFAULT_BOOT_TIMEOUT
    scenarios.check_libvirt_sync(ref_guest)


def test_delimited_sync(ref_guest: vmlib.Guest) -> None:
    scenarios.check_delimited_sync(ref_guest)


def test_guest_info(ref_guest: vmlib.Guest) -> None:
    info = scenarios.check_guest_info(ref_guest)
    assert info["version"].startswith("7.2"), info["version"]


def test_fsinfo_data_disks(ref_guest: vmlib.Guest) -> None:
    scenarios.check_fsinfo(ref_guest)


def test_get_disks_partition_dependency(ref_guest: vmlib.Guest) -> None:
    scenarios.check_disks(ref_guest)


def test_interfaces_eth0(ref_guest: vmlib.Guest) -> None:
    scenarios.check_interfaces(ref_guest)


def test_osinfo(ref_guest: vmlib.Guest) -> None:
    scenarios.check_osinfo(ref_guest)


def test_exec_and_files(ref_guest: vmlib.Guest) -> None:
    scenarios.check_exec_and_files(ref_guest)


def test_freeze_thaw_blocks_writer(ref_guest: vmlib.Guest) -> None:
    scenarios.check_freeze_thaw(ref_guest)


def test_host_detach_reattach(ref_guest: vmlib.Guest) -> None:
    scenarios.check_detach_reattach(ref_guest)


def test_set_vcpus(ref_guest: vmlib.Guest) -> None:
    scenarios.check_set_vcpus(ref_guest)


def test_set_time(ref_guest: vmlib.Guest) -> None:
    scenarios.check_set_time(ref_guest)


def test_set_user_password(ref_guest: vmlib.Guest) -> None:
    scenarios.check_set_user_password(ref_guest)


# Order matters: suspend and reboot leave the power guest running, shutdown ends it.


def test_suspend_ram_wakeup(ref_power_guest: vmlib.Guest) -> None:
    scenarios.check_suspend_ram(ref_power_guest)


def test_reboot_reset_event(ref_power_guest: vmlib.Guest) -> None:
    scenarios.check_reboot(ref_power_guest)


def test_shutdown_event(ref_power_guest: vmlib.Guest) -> None:
    scenarios.check_shutdown(ref_power_guest)
