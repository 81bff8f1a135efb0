"""Fixtures for the real-VM tier (``-m vm``).

One session guest per agent serves the read-only and self-restoring tests. The
power tests (suspend, reboot, shutdown, in that order) share a second guest per
agent booted from an ext4 root image, since virtio-9p does not survive S3; the
shutdown test runs last and leaves it dead. ``guest_factory`` boots fully fresh
guests for anything else. When the
host cannot run QEMU at all (or ``QGA_SKIP_VM=1``) the whole tier is skipped
with the reason -- under ``CI=true`` every test fails with it instead
(tests.prereq) -- and the reason is repeated in a banner in the terminal
summary: never a silent pass.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from tests.prereq import in_ci, require
from tests.vm import scenarios, sdguest, vmlib

_UNAVAILABLE: List[str] = []
PY_BOOT_TIMEOUT = float(os.environ.get("QGA_VM_PY_BOOT_TIMEOUT", "120"))


def pytest_collection_modifyitems(config: Any, items: List[Any]) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here + os.sep):
            item.add_marker(pytest.mark.vm)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _UNAVAILABLE:
        terminalreporter.write_sep("!", "VM TIER FAILED (CI=true)" if in_ci() else "VM TIER SKIPPED",
                                   red=True, bold=True)
        terminalreporter.write_line(f"the real-VM tests did not run: {_UNAVAILABLE[0]}", red=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    """Attach the guest's console tail to failing VM tests."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for name, val in getattr(item, "funcargs", {}).items():
            for g in (val if isinstance(val, list) else [val]):
                if isinstance(g, vmlib.Guest):
                    rep.sections.append((f"guest {g.name} ({name})", g.diagnostics(80)))


@pytest.fixture(scope="session")
def vm_artifacts() -> vmlib.Artifacts:
    """Built (or cached) kernel, initramfs and disks; skips (CI: fails) the tier loudly if impossible."""
    reason: Optional[str] = None
    if os.environ.get("QGA_SKIP_VM") == "1":
        reason = "disabled by QGA_SKIP_VM=1"
    else:
        try:
            art = vmlib.prepare()
            vmlib.qemu_smoke_test()
            return art
        except vmlib.VMUnavailable as e:
            reason = str(e)
    _UNAVAILABLE.append(reason)
    require(f"VM tier unavailable: {reason}")
    raise AssertionError("unreachable")


@pytest.fixture
def guest_factory(vm_artifacts: vmlib.Artifacts) -> Iterator[Callable[..., vmlib.Guest]]:
    """make(agent, **Guest kwargs) -> a booted fresh guest, destroyed after the test."""
    made: List[vmlib.Guest] = []

    def make(agent: str, boot_timeout: Optional[float] = None, **kw: Any) -> vmlib.Guest:
        g = vmlib.Guest(agent, artifacts=vm_artifacts, name=kw.pop("name", f"fresh-{agent}"), **kw)
        made.append(g)
        g.boot(timeout=boot_timeout or (PY_BOOT_TIMEOUT if agent == "py" else vmlib.DEFAULT_BOOT_TIMEOUT))
        return g

    yield make
    for g in made:
        g.close()


class _Shared:
    """A session guest that is rebooted if a test killed it."""

    def __init__(self, agent: str, art: vmlib.Artifacts, root: str = "9p") -> None:
        self.agent = agent
        self.art = art
        self.root = root
        self.guest: Optional[vmlib.Guest] = None
        self.boots = 0
        self.boot_error: Optional[str] = None

    def get(self) -> vmlib.Guest:
        g = self.guest
        if g is not None and g.is_running():
            try:
                scenarios.ensure_healthy(g)
                return g
            except (vmlib.GuestError, vmlib.AgentError, TimeoutError, EOFError, OSError):
                pass
        if g is not None:
            g.close()
        if self.boot_error is not None:
            pytest.fail(f"shared {self.agent} guest could not boot (first error repeated): "
                        f"{self.boot_error}", pytrace=False)
        if self.boots >= 3:
            pytest.fail(f"shared {self.agent} guest died {self.boots} times; giving up")
        self.boots += 1
        kw: Dict[str, Any] = {}
        if self.root == "disk":
            # virtio-9p does not survive S3: the power guest boots from the ext4 root image.
            kw = {"root": "disk", "rootfs_image": vmlib.ensure_rootfs_image()}
        timeout = PY_BOOT_TIMEOUT if self.agent == "py" else vmlib.DEFAULT_BOOT_TIMEOUT
        for attempt in (1, 2):
            g = vmlib.Guest(self.agent, artifacts=self.art, name=f"{self.root}-{self.agent}", **kw)
            self.guest = g
            try:
                g.boot(timeout=timeout)
                return g
            except (vmlib.GuestError, TimeoutError, EOFError, OSError) as e:
                g.close()
                self.guest = None
                # A guest that reported why it failed will fail again; a silent hang
                # (TCG on a starved host) gets one more try.
                if attempt == 2 or "guest reported" in str(e):
                    # Later tests fail fast with the same reason.
                    self.boot_error = str(e)
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.guest is not None:
            self.guest.close()


@pytest.fixture(scope="session")
def _shared_guests(vm_artifacts: vmlib.Artifacts) -> Iterator[Dict[str, _Shared]]:
    shared = {"c": _Shared("c", vm_artifacts), "py": _Shared("py", vm_artifacts),
              "c-power": _Shared("c", vm_artifacts, root="disk"),
              "py-power": _Shared("py", vm_artifacts, root="disk")}
    yield shared
    for s in shared.values():
        s.close()


@pytest.fixture
def ref_guest(_shared_guests: Dict[str, _Shared]) -> vmlib.Guest:
    """The shared guest running Debian's qemu-ga 7.2, resynchronised."""
    return _shared_guests["c"].get()


@pytest.fixture
def py_guest(_shared_guests: Dict[str, _Shared]) -> vmlib.Guest:
    """The shared guest running qemu-ga-py, resynchronised."""
    return _shared_guests["py"].get()


@pytest.fixture
def ref_power_guest(_shared_guests: Dict[str, _Shared]) -> vmlib.Guest:
    """qemu-ga 7.2 in a guest with an ext4 root (survives S3), shared by the power tests.

    The power tests run in the order suspend, reboot, shutdown; a test finding
    the guest dead or unresponsive gets a freshly booted one.
    """
    return _shared_guests["c-power"].get()


@pytest.fixture
def py_power_guest(_shared_guests: Dict[str, _Shared]) -> vmlib.Guest:
    """qemu-ga-py in a guest with an ext4 root, shared by the power tests (see ref_power_guest)."""
    return _shared_guests["py-power"].get()


@pytest.fixture(scope="session")
def sd(vm_artifacts: vmlib.Artifacts) -> Iterator[sdguest.SdGuest]:
    """The systemd guest, booted once per session; the agent is active and synced.

    test_vm_systemd.py uses it first (its tests look at the boot-time agent),
    test_vm_systemd_freeze.py after it and powers it off at the end.
    """
    s = sdguest.boot(vm_artifacts)
    yield s
    s.g.close()
