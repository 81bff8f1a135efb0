"""Run a VM-tier guest under real libvirt and drive its agent with ``virsh``.

The guest is the tier's disk-root guest (kernel, initramfs and ext4 root image
from :mod:`tests.vm.vmlib`; the root survives S3), described as a libvirt
domain instead of a QEMU command line: the agent port is a ``<channel
type='unix'>`` with target ``org.qemu.guest_agent.0``, so libvirt itself opens
the host side, runs its guest-sync handshake and follows the port's
VSERPORT_CHANGE events, as on a production host.

libvirtd: the host's own ``qemu:///system`` when one answers; otherwise a
private ``libvirtd`` (root, with its sockets in a temporary directory) for the
duration of the run.  QEMU runs as root without relabelling (a static DAC
seclabel), so the cached images are never chowned.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple
from xml.sax.saxutils import escape

from tests.vm import vmlib

APT_PACKAGES = ["libvirt-daemon", "libvirt-daemon-system", "libvirt-clients"]
VIRSH_TIMEOUT = 120.0
VIRTLOGD_SOCK = "/run/libvirt/virtlogd-sock"


class Libvirtd:
    """A libvirt connection URI, backed by a private daemon if the host has none."""

    def __init__(self) -> None:
        self.uri = "qemu:///system"
        self.dir: Optional[str] = None
        self.proc: Optional[subprocess.Popen] = None
        self.logd: Optional[subprocess.Popen] = None

    def start(self) -> None:
        """Use the system daemon if it answers, else start a private one."""
        if self._answers(self.uri, timeout=15):
            vmlib.log("libvirt: using the running system daemon")
            return
        self.dir = tempfile.mkdtemp(prefix="qga-libvirtd-")
        conf = Path(self.dir) / "libvirtd.conf"
        conf.write_text(f'unix_sock_dir = "{self.dir}"\nunix_sock_rw_perms = "0700"\n'
                        'auth_unix_rw = "none"\nauth_unix_ro = "none"\n'
                        f'log_outputs = "3:file:{self.dir}/libvirtd.log"\n')
        self.uri = f"qemu:///system?socket={self.dir}/libvirt-sock"
        if not os.path.exists(VIRTLOGD_SOCK):
            # QEMU's stdout/stderr and the serial file go through virtlogd.
            self.logd = self._spawn("virtlogd", "-p", f"{self.dir}/virtlogd.pid")
        self.proc = self._spawn("libvirtd", "-f", str(conf), "-p", f"{self.dir}/libvirtd.pid")
        # The first connection probes QEMU's capabilities: slow on a loaded host.
        deadline = time.monotonic() + 180
        while not self._answers(self.uri, timeout=60):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise vmlib.VMUnavailable("private libvirtd did not start:\n" + tail)
            time.sleep(0.5)
        vmlib.log(f"libvirt: private libvirtd pid {self.proc.pid} ({self.dir})")

    def _spawn(self, *argv: str) -> subprocess.Popen:
        assert self.dir is not None
        with open(os.path.join(self.dir, "stdout.log"), "ab") as log:
            return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    @staticmethod
    def _answers(uri: str, timeout: float) -> bool:
        try:
            p = subprocess.run(["virsh", "-c", uri, "version"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return p.returncode == 0 and b"Running hypervisor: QEMU" in p.stdout

    def log_tail(self, lines: int = 30) -> str:
        """The private daemon's log (empty for the system daemon)."""
        if self.dir is None:
            return ""
        out = []
        for name in ("stdout.log", "libvirtd.log"):
            try:
                out += Path(self.dir, name).read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                pass
        return "\n".join(out)

    def stop(self) -> None:
        """Stop the private daemon (only the one started here) and remove its directory."""
        for proc in (self.proc, self.logd):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self.proc = self.logd = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def missing_prerequisites() -> List[str]:
    """The libvirt programs this module needs that the host lacks."""
    return [f"{t} ({p})" for t, p in (("virsh", "libvirt-clients"), ("libvirtd", "libvirt-daemon"))
            if not vmlib._tool(t)]


def install_prerequisites() -> None:
    """apt-get install the libvirt packages (root, unless QGA_VM_NO_INSTALL=1)."""
    if not missing_prerequisites() or os.environ.get("QGA_VM_NO_INSTALL") == "1" \
            or os.geteuid() != 0 or not vmlib._tool("apt-get"):
        return
    vmlib.log("apt-get install " + " ".join(APT_PACKAGES))
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES],
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), timeout=900,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class VirshError(RuntimeError):
    """virsh exited non-zero; ``output`` is what it printed."""

    def __init__(self, argv: Sequence[str], output: str) -> None:
        self.output = output
        super().__init__(f"virsh {' '.join(argv)}: {output.strip()}")


class LibvirtGuest(vmlib.Guest):
    """A disk-root VM-tier guest started as a transient libvirt domain.

    Console markers work as for :class:`vmlib.Guest` (the serial port is a file);
    the agent is reached only through libvirt (:meth:`virsh`, :meth:`agent_cmd`).
    """

    def __init__(self, agent: str, daemon: Libvirtd, **kw: Any) -> None:
        kw.setdefault("root", "disk")
        super().__init__(agent, **kw)
        self.daemon = daemon
        self.domain = f"qga-{self.name}-{uuid.uuid4().hex[:8]}"
        # QEMU's stderr (and -trace output), as libvirt's virtlogd keeps it.
        self.qemu_log = Path(f"/var/log/libvirt/qemu/{self.domain}.log")
        self.started = False

    # -- virsh -------------------------------------------------------------------------

    def virsh(self, *args: str, timeout: float = VIRSH_TIMEOUT, check: bool = True) -> str:
        """Run ``virsh -c URI args`` and return its stdout (VirshError if it fails)."""
        argv = ["-c", self.daemon.uri, *args]
        try:
            p = subprocess.run(["virsh", *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise TimeoutError(f"virsh {' '.join(args)} did not return in {timeout}s") from e
        if check and p.returncode != 0:
            raise VirshError(args, p.stderr + p.stdout)
        return p.stdout

    def agent_cmd(self, name: str, args: Optional[Dict[str, Any]] = None,
                  timeout: float = VIRSH_TIMEOUT) -> Any:
        """``virsh qemu-agent-command``; returns the command's ``return`` value."""
        msg: Dict[str, Any] = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        out = self.virsh("qemu-agent-command", self.domain, json.dumps(msg), timeout=timeout)
        return json.loads(out)["return"]

    def state(self) -> str:
        """``virsh domstate``; 'gone' once the transient domain no longer exists."""
        try:
            return self.virsh("domstate", self.domain, timeout=60).strip()
        except VirshError as e:
            if "ailed to get domain" in e.output or "not found" in e.output:
                return "gone"
            raise

    def wait_state(self, want: Sequence[str], timeout: float = 120) -> str:
        """Poll :meth:`state` until it is one of ``want``."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.state()
            if st in want:
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"domain state {st!r}, not {list(want)}, after {timeout}s\n"
                                   + self.diagnostics())
            time.sleep(0.2)

    # -- domain XML --------------------------------------------------------------------

    def _disk(self, path: Path, target: str, serial: str, slot: str, readonly: bool, fmt: str) -> str:
        return (f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/>"
                f"<source file='{escape(str(path))}'/><target dev='{target}' bus='virtio'/>"
                + ("<readonly/>" if readonly else "")
                + f"<serial>{serial}</serial>{_pci(slot)}</disk>")

    def domain_xml(self) -> str:
        """The domain: same devices and PCI slots as :meth:`vmlib.Guest.qemu_argv`."""
        a = self.artifacts
        assert a is not None and self.rootfs_image is not None
        # Data disks: qcow2 overlays in the work dir keep the cached images pristine.
        overlays = []
        for src, name in ((a.disk_ext4, "ext4"), (a.disk_xfs, "xfs")):
            ov = self.workdir / f"{name}.qcow2"
            vmlib._run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(src), str(ov)])
            overlays.append(ov)
        disks = (self._disk(overlays[0], "vda", vmlib.SERIAL_EXT4, "ext4", False, "qcow2")
                 + self._disk(overlays[1], "vdb", vmlib.SERIAL_XFS, "xfs", False, "qcow2")
                 + self._disk(self.rootfs_image, "vdc", vmlib.SERIAL_ROOTFS, "rootfs", True, "raw"))
        # Guest(extra_qemu=...) words go to QEMU as they are (e.g. -trace for diagnosis).
        qemu_args = "".join(f"<qemu:arg value='{escape(a)}'/>" for a in self.extra_qemu)
        return f"""<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{self.domain}</name>
  <memory unit='MiB'>{self.mem_mb}</memory>
  <vcpu>{self.smp}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(a.kernel))}</kernel>
    <initrd>{escape(str(a.initrd))}</initrd>
    <cmdline>{escape(self.kernel_cmdline())}</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model></cpu>
  <pm><suspend-to-mem enabled='yes'/><suspend-to-disk enabled='no'/></pm>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
  <devices>
    <emulator>{escape(vmlib._tool(vmlib.QEMU) or vmlib.QEMU)}</emulator>
    {disks}
    <controller type='usb' model='none'/>
    <controller type='virtio-serial' index='0'>{_pci('serial')}</controller>
    <interface type='user'>
      <mac address='52:54:00:12:34:56'/><model type='virtio'/>{_pci('net')}
    </interface>
    <serial type='file'><source path='{escape(str(self.console_log))}'/><target port='0'/></serial>
    <channel type='unix'>
      <target type='virtio' name='{vmlib.AGENT_PORT_NAME}'/>
      <address type='virtio-serial' controller='0' bus='0' port='1'/>
    </channel>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend>{_pci('rng')}</rng>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>{qemu_args}</qemu:commandline>
</domain>
"""

    # -- lifecycle (replaces vmlib.Guest's QEMU process handling) ----------------------

    def start(self) -> None:
        """Create the transient domain."""
        if self.artifacts is None:
            self.artifacts = vmlib.prepare()
        xml = self.workdir / "domain.xml"
        xml.write_text(self.domain_xml())
        self.started_at = time.monotonic()
        self.virsh("create", str(xml))
        self.started = True

    def wait_agent(self, timeout: float = vmlib.DEFAULT_BOOT_TIMEOUT, marker_from: int = 0) -> None:
        """Wait for the agent's console marker, then for libvirt to reach it (guest-ping)."""
        deadline = time.monotonic() + timeout
        self.wait_console(r"qga-vm: agent pid \d+", timeout, start=marker_from)
        while True:
            try:
                self.agent_cmd("guest-ping", timeout=30)
                return
            except VirshError:
                self._check_alive("waiting for the agent")
                self._check_console_fatal(marker_from)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def is_running(self) -> bool:
        return self.started and self.state() not in ("gone", "shut off", "crashed")

    def _check_alive(self, what: str) -> None:
        if self.started and not self.is_running():
            raise vmlib.GuestError(f"domain {self.domain} is {self.state()} while {what}\n"
                                   + self.diagnostics())

    def qemu_log_text(self) -> str:
        """What :attr:`qemu_log` holds so far."""
        try:
            return self.qemu_log.read_text(errors="replace")
        except OSError:
            return ""

    def diagnostics(self, lines: int = 40) -> str:
        qlog = self.qemu_log_text()
        con = self.console().splitlines()[-lines:]
        return ("--- console tail ({}) ---\n{}\n--- libvirt qemu log tail ---\n{}\n{}".format(
            self.console_log, "\n".join(con), "\n".join(qlog.splitlines()[-10:]),
            self.daemon.log_tail(10)))

    def quit(self, timeout: float = 10) -> None:
        self.kill()

    def kill(self) -> None:
        """``virsh destroy`` (the domain is transient: it is gone afterwards)."""
        if self.started and self.state() != "gone":
            self.virsh("destroy", self.domain, check=False, timeout=60)
        self.started = False


class AgentEvents:
    """libvirt's agent-lifecycle events for one domain, as ``virsh event --loop`` prints them.

    libvirt emits one when QEMU reports VSERPORT_CHANGE for the agent channel:
    ``disconnected`` when the guest side of the port closes (the agent closed
    it, or the guest reset the device, as on suspend), ``connected`` when it
    opens again; on a disconnect libvirt also drops its agent connection.
    """

    _RX = re.compile(r"event 'agent-lifecycle' for domain '?(?P<dom>[^':]+)'?: state: '?(?P<state>\w+)'?")

    def __init__(self, daemon: Libvirtd) -> None:
        self.events: List[Tuple[float, str, str]] = []  # (host monotonic time, domain, state)
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(["virsh", "-c", daemon.uri, "event", "--loop", "--event",
                                      "agent-lifecycle"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     universal_newlines=True, start_new_session=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = self._RX.search(line)
            if m:
                with self._cond:
                    self.events.append((time.monotonic(), m["dom"], m["state"]))
                    self._cond.notify_all()

    def states(self, domain: str, start: int = 0) -> List[str]:
        """The domain's states in arrival order, from its ``start``-th event on."""
        with self._cond:
            return [st for _, d, st in self.events if d == domain][start:]

    def last_time(self, domain: str) -> Optional[float]:
        """When the domain's latest event arrived (host monotonic), if any."""
        with self._cond:
            times = [t for t, d, _ in self.events if d == domain]
        return times[-1] if times else None

    def wait(self, domain: str, state: str, start: int, timeout: float = 120) -> int:
        """Wait for ``state`` among the domain's events from index ``start``; return its index."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                seen = [st for _, d, st in self.events if d == domain]
                for i in range(start, len(seen)):
                    if seen[i] == state:
                        return i
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"no agent-lifecycle '{state}' for {domain} after event "
                                       f"{start} in {timeout}s; saw {seen}")
                self._cond.wait(min(left, 1.0))

    def close(self) -> None:
        """Stop ``virsh event``."""
        vmlib.stop_process(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _pci(device: str) -> str:
    return (f"<address type='pci' domain='0x0000' bus='0x00' slot='{vmlib.PCI_SLOT[device]:#04x}' "
            "function='0x0'/>")
