"""The VM tier's systemd guest (``Guest(init="systemd")``) and its witnesses.

Shared by test_vm_systemd.py and test_vm_systemd_freeze.py (one boot per
session, see conftest's ``sd``): the helpers to read the console monitor
(``guest/systemd/monitor.sh``), to talk to whichever agent unit is running, and
to boot such a guest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List

from tests.prereq import require
from tests.vm import vmlib

UNIT = "qemu-ga-py.service"
REF_UNIT = "qemu-guest-agent.service"
DEV_UNIT = r"dev-virtio\x2dports-org.qemu.guest_agent.0.device"
PORT = "/dev/virtio-ports/" + vmlib.AGENT_PORT_NAME
GUEST_PYTHON = "/usr/bin/python3"
BOOT_TIMEOUT = float(os.environ.get("QGA_VM_SYSTEMD_BOOT_TIMEOUT", "300"))
STATE_TIMEOUT = 60.0

# Host files the guest root needs (the guest's root is the host's / over 9p).
HOST_NEEDS = {"/lib/systemd/systemd": "systemd", "/lib/systemd/systemd-udevd": "udev",
              "/bin/udevadm": "udev",
              "/usr/lib/python3/dist-packages/systemd/journal.py": "python3-systemd"}

MON_RX = re.compile(r"qga-mon: t=(?P<t>[\d.]+) svc=(?P<active>[\w-]+)/(?P<sub>[\w-]+) "
                    r"pid=(?P<pid>\d+) port=(?P<port>[01]) restarts=(?P<restarts>\S+) "
                    r"dev=(?P<dev>[\w-]+) status=\[(?P<status>[^\]\r\n]*)\]")


@dataclass
class Mon:
    """One monitor line: the state of qemu-ga-py.service and the port's device unit."""

    t: float          # guest uptime
    active: str       # ActiveState of the service
    sub: str          # SubState
    pid: int          # MainPID
    port: bool        # the main process has a /dev/vport* open
    restarts: str     # NRestarts
    dev: str          # ActiveState of the device unit
    status: str       # StatusText (from STATUS=)
    offset: int       # console offset

    def __str__(self) -> str:
        return (f"t={self.t} {self.active}/{self.sub} pid={self.pid} port={int(self.port)} "
                f"restarts={self.restarts} dev={self.dev} status={self.status!r}")


class SdGuest:
    """The systemd guest plus helpers; ``g`` is the underlying vmlib.Guest."""

    def __init__(self, g: vmlib.Guest) -> None:
        self.g = g
        self.boot_pid = 0
        self.timings: Dict[str, float] = {}

    # -- the console monitor --------------------------------------------------------------

    def mon(self, start: int = 0) -> List[Mon]:
        text = self.g.console()
        out = []
        for m in MON_RX.finditer(text, start):
            out.append(Mon(float(m["t"]), m["active"], m["sub"], int(m["pid"]), m["port"] == "1",
                           m["restarts"], m["dev"], m["status"], m.start()))
        return out

    def wait_mon(self, pred: Callable[[Mon], bool], start: int, what: str,
                 timeout: float = STATE_TIMEOUT) -> Mon:
        deadline = time.monotonic() + timeout
        while True:
            for m in self.mon(start):
                if pred(m):
                    return m
            if not self.g.is_running():
                raise vmlib.GuestError(f"QEMU exited while waiting for {what}\n" + self.g.diagnostics())
            if time.monotonic() > deadline:
                seen = "\n".join(str(m) for m in self.mon(start)) or "(no monitor lines)"
                raise AssertionError(f"no {what} within {timeout:.0f}s; monitor saw:\n{seen}\n"
                                     + self.g.diagnostics(60))
            time.sleep(0.2)

    def offset(self) -> int:
        return len(self.g.console())

    # -- the agent ------------------------------------------------------------------------

    def agent(self, timeout: float = 30) -> vmlib.AgentClient:
        """A client that has just completed libvirt's guest-sync handshake."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                c = self.g.agent
                c.sync(timeout=max(0.5, min(5.0, deadline - time.monotonic())))
                return c
            except (TimeoutError, EOFError, OSError, vmlib.GuestError) as e:
                self.g.detach_agent()
                if time.monotonic() > deadline:
                    raise AssertionError(f"agent did not answer guest-sync in {timeout:.0f}s: {e}\n"
                                         + self.g.diagnostics())
                time.sleep(0.3)

    def sh(self, script: str, timeout: float = 60) -> str:
        return self.agent().sh(script, timeout=timeout)

    def show(self, unit: str, *props: str) -> Dict[str, str]:
        out = self.sh(f"systemctl show -p {','.join(props)} '{unit}'")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *match: str) -> List[Dict[str, Any]]:
        out = self.sh("journalctl --no-pager -o json " + " ".join(match))
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def host_prerequisites() -> None:
    """Install (or require) the host packages the systemd guest's root needs."""
    missing = sorted({pkg for path, pkg in HOST_NEEDS.items() if not os.path.exists(path)})
    if missing and os.geteuid() == 0 and os.environ.get("QGA_VM_NO_INSTALL") != "1" \
            and shutil.which("apt-get"):
        vmlib.log("apt-get install " + " ".join(missing) + " (systemd guest)")
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing],
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), timeout=900,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        missing = sorted({pkg for path, pkg in HOST_NEEDS.items() if not os.path.exists(path)})
    if missing:
        require("systemd guest needs the host packages " + ", ".join(missing)
                + " (the guest's root is the host's /)")


def boot(artifacts: vmlib.Artifacts, name: str = "systemd", timeout: float = BOOT_TIMEOUT) -> SdGuest:
    """Boot a systemd guest until qemu-ga-py.service is active and synced (one retry)."""
    host_prerequisites()
    for attempt in (1, 2):
        g = vmlib.Guest("py", init="systemd", python=GUEST_PYTHON, artifacts=artifacts, name=name)
        try:
            return _boot(g, timeout)
        except Exception:
            # A silent hang before systemd even started (TCG on a starved host) gets
            # one more try, as for the other tier guests; anything later does not.
            if attempt == 2 or "qga-vm: init: switching to systemd" in g.console():
                raise
            vmlib.log(f"{name} guest: boot hung before systemd started; retrying once")
    raise AssertionError("unreachable")


def _boot(g: vmlib.Guest, timeout: float) -> SdGuest:
    s = SdGuest(g)
    try:
        g.boot(wait_agent=False, timeout=timeout)
        g.wait_console(r"qga-vm: init: switching to systemd", timeout)
        s.timings["systemd exec"] = time.monotonic() - g.started_at
        m = s.wait_mon(lambda m: m.active == "active" and m.port, 0, "active qemu-ga-py.service",
                       timeout=max(10.0, timeout - (time.monotonic() - g.started_at)))
        s.timings["service active"] = time.monotonic() - g.started_at
        s.boot_pid = m.pid
        s.agent(timeout=30)
        s.timings["agent synced"] = time.monotonic() - g.started_at
        vmlib.log("systemd guest: " + ", ".join(f"{k} {v:.1f}s" for k, v in s.timings.items()))
    except BaseException:
        g.keep_workdir = True
        g.close()
        raise
    return s
