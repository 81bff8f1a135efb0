"""One-command demo: boot a QEMU guest with qemu-ga-py inside and talk to it like libvirt.

    python3 -m tests.vm.demo              # qemu-ga-py inside the guest
    python3 -m tests.vm.demo --agent c    # Debian's qemu-ga 7.2, for comparison
    python3 tests/vm/demo.py --json       # also print every reply in full

Prepares the guest on first use (Debian kernel, busybox initramfs, data disks;
cached in $QGA_VM_CACHE, default /var/cache/qemu-ga-py-vm; needs root and apt),
boots it under TCG, then runs sync, info, osinfo, fsinfo, freeze/thaw and exec
from the host over the virtio-serial chardev socket, with timings, and finally
shuts the guest down through the agent and waits for QEMU's SHUTDOWN event.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make 'tests.vm' importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.vm import vmlib  # noqa: E402


def _step(title: str, fn: Callable[[], Any], show: Callable[[Any], str], full: bool) -> Any:
    t0 = time.monotonic()
    result = fn()
    ms = (time.monotonic() - t0) * 1000
    print(f"  {title:<44} {ms:8.1f} ms   {show(result)}")
    if full:
        print("    " + json.dumps(result, indent=1).replace("\n", "\n    "))
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agent", choices=["py", "c"], default="py",
                    help="py = qemu-ga-py (default), c = /usr/sbin/qemu-ga 7.2")
    ap.add_argument("--json", action="store_true", help="print every reply in full")
    ap.add_argument("--keep", action="store_true", help="keep the guest's work dir (console log)")
    ap.add_argument("--timeout", type=float, default=vmlib.DEFAULT_BOOT_TIMEOUT, help="boot timeout (s)")
    args = ap.parse_args(argv)
    if args.keep:
        os.environ["QGA_VM_KEEP"] = "1"

    t_start = time.monotonic()
    print("== preparing the guest (kernel, initramfs, disks; cached after the first run)")
    try:
        art = vmlib.prepare()
    except vmlib.VMUnavailable as e:
        print(f"cannot run the demo: {e}", file=sys.stderr)
        return 2
    print(f"  ready in {time.monotonic() - t_start:.1f} s: kernel {art.kver}, cache {vmlib.CACHE_DIR}")

    name = "qemu-ga-py" if args.agent == "py" else "qemu-ga 7.2 (reference)"
    print(f"== booting a TCG guest (2 vCPUs, 1 GiB) with {name} on "
          f"/dev/virtio-ports/{vmlib.AGENT_PORT_NAME}")
    with vmlib.Guest(args.agent, artifacts=art, name="demo") as g:
        try:
            g.boot(timeout=args.timeout)
        except vmlib.GuestError as e:
            print(f"boot failed: {e}", file=sys.stderr)
            return 1
        for k, v in g.milestones.items():
            print(f"  {k:<20} {v:6.1f} s")
        print(f"  host sockets: agent {g.agent_sock}, QMP {g.qmp_sock}; console log {g.console_log}")

        ag = g.agent
        full = args.json
        print("== host-side session")
        _step("guest-sync (libvirt, ms-timestamp id)", lambda: ag.sync(), lambda r: f"id {r}", False)
        _step("0xFF + guest-sync-delimited", lambda: ag.sync_delimited(), lambda r: f"id {r}", False)
        _step("guest-info", lambda: ag.execute("guest-info"),
              lambda r: f"version {r['version']}, {len(r['supported_commands'])} commands", full)
        _step("guest-get-osinfo", lambda: ag.execute("guest-get-osinfo"),
              lambda r: f"{r.get('pretty-name')}, kernel {r.get('kernel-release')}", full)

        def fs_summary(r: Any) -> str:
            parts = []
            for f in sorted(r, key=lambda x: x["mountpoint"]):
                d = (f.get("disk") or [{}])[0]
                pci = d.get("pci-controller", {})
                parts.append(f"{f['mountpoint']} {f['type']} {d.get('dev')} serial={d.get('serial')} "
                             f"pci=00:{pci.get('slot', -1):02x}.{pci.get('function', 0)}")
            return "; ".join(parts)

        _step("guest-get-fsinfo", lambda: ag.execute("guest-get-fsinfo"), fs_summary, full)
        _step("guest-fsfreeze-freeze", lambda: ag.execute("guest-fsfreeze-freeze", timeout=60),
              lambda r: f"{r} filesystems frozen", False)
        _step("guest-fsfreeze-status", lambda: ag.execute("guest-fsfreeze-status"), str, False)
        _step("guest-fsfreeze-thaw", lambda: ag.execute("guest-fsfreeze-thaw", timeout=60),
              lambda r: f"{r} filesystems thawed", False)
        _step("guest-exec uname -a (+ exec-status polling)", lambda: ag.exec_wait("/bin/uname", ["-a"]),
              lambda r: f"exit {r.get('exitcode')}: {r.get('out-data', b'').decode().strip()}", False)
        _step("guest-network-get-interfaces", lambda: ag.execute("guest-network-get-interfaces"),
              lambda r: ", ".join(f"{i['name']} " + " ".join(
                  f"{a['ip-address']}/{a['prefix']}" for a in i.get("ip-addresses", [])
                  if a["ip-address-type"] == "ipv4") for i in r), full)

        print("== guest-shutdown through the agent")
        t0 = time.monotonic()
        ag.send_no_reply("guest-shutdown")
        ev = g.qmp.wait_event("SHUTDOWN", timeout=60)
        rc = g.wait_exit(60)
        print(f"  QMP event {ev['event']} {ev.get('data')} after {time.monotonic() - t0:.1f} s; "
              f"QEMU exited with status {rc}")
    print(f"== done in {time.monotonic() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
