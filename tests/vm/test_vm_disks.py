"""Disk addresses on real emulated buses: qemu-ga-py against Debian's qemu-ga 7.2.

One guest per agent kind, both booted in parallel with the same extra disks
(on top of the tier's two virtio-blk data disks):

==========  =======================================  =========  ==================
bus         QEMU device                              PCI slot   disk
==========  =======================================  =========  ==================
virtio-scsi scsi-hd scsi-id=1,lun=2 on virtio-scsi   00:10.0    MBR + ext4 part.
sata        ide-hd on ich9-ahci port 2               00:11.0    whole-disk ext4
ide         ide-hd on the pc's piix IDE ide.1 (0, 1) 00:01.1    part. / whole
nvme        nvme (one namespace)                     00:12.0    MBR + ext4 part.
lsi         scsi-hd scsi-id=3 on lsi53c895a          00:13.0    whole-disk ext4
==========  =======================================  =========  ==================

The storage drivers are not in the tier's initramfs (loading them, ata_piix's
probe above all, would slow every other guest's boot under TCG): the test
insmods them through guest-exec from the kernel package the guest already
sees over 9p, waits for the disks, writes the udev database entries real udev
would write for them (running udev's own ``ata_id``/``scsi_id`` from the
host's userland, and the nvme rules of 60-persistent-storage.rules), and
mounts every ext4 filesystem at ``/mnt/<serial>``.

``python3 -m tests.vm.test_vm_disks capture`` boots a qemu-ga 7.2 guest, runs
``tests/data/blockdev/capture.py`` in it and stores one sysfs/udev subset per
bus with qemu-ga 7.2's replies under ``tests/data/blockdev/vm-<bus>/``
(consumed by tests/unit/test_storage_vm_capture.py).
"""

from __future__ import annotations

import copy
import io
import json
import shlex
import shutil
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from tests.vm import vmlib

pytestmark = pytest.mark.vm

# bus -> (serial, image kind, expected address members except serial/dev)
SLOT = {"vscsi": 0x10, "ahci": 0x11, "nvme": 0x12, "lsi": 0x13}
PIIX_IDE = {"domain": 0, "bus": 0, "slot": 1, "function": 1}


def _pci(slot: int) -> Dict[str, int]:
    return {"domain": 0, "bus": 0, "slot": slot, "function": 0}


# name: (serial, partitioned image?, bus-type, pci-controller, bus, target, unit)
DISKS: Dict[str, Tuple[str, bool, str, Dict[str, int], int, int, int]] = {
    "virtio-scsi": ("qga-vscsi", True, "scsi", _pci(SLOT["vscsi"]), 0, 0, 2),   # unit = LUN
    "sata": ("qga-sata", False, "sata", _pci(SLOT["ahci"]), 0, 0, 2),          # port 2 of 6
    "ide-master": ("qga-ide-m", True, "ide", PIIX_IDE, 1, 0, 0),                # ide.1 unit 0
    "ide-slave": ("qga-ide-s", False, "ide", PIIX_IDE, 1, 0, 1),                # ide.1 unit 1
    "nvme": ("qga-nvme", True, "nvme", _pci(SLOT["nvme"]), 0, 0, 0),
    "lsi": ("qga-lsi", False, "scsi", _pci(SLOT["lsi"]), 0, 0, 3),             # scsi-id 3
}

# The storage drivers and what they need (dependencies are resolved on the host).
# crct10dif_generic / crc64_rocksoft_generic are crypto soft dependencies of
# sd_mod's and nvme's t10-pi that insmod cannot resolve.
STORAGE_MODULES = ["crct10dif_generic", "crc64_rocksoft_generic", "virtio_scsi", "sd_mod",
                   "ahci", "ata_piix", "nvme", "sym53c8xx"]

# udev's ID_SERIAL for each bus, as 60-persistent-storage.rules computes it:
# sd* via ata_id (vendor "ATA") or scsi_id; nvme from the model, serial and
# namespace id attributes with whitespace replaced by '_'.
UDEV_SERIAL = {
    "virtio-scsi": "0QEMU_QEMU_HARDDISK_qga-vscsi",
    "sata": "QEMU_HARDDISK_qga-sata",
    "ide-master": "QEMU_HARDDISK_qga-ide-m",
    "ide-slave": "QEMU_HARDDISK_qga-ide-s",
    "nvme": "QEMU_NVMe_Ctrl_qga-nvme_1",
    "lsi": "0QEMU_QEMU_HARDDISK_qga-lsi",
}

# Where 10.2 (what qemu-ga-py implements) deliberately differs from 7.2 in
# these replies: fsinfo's total-bytes-privileged is new in 10.2.
ONLY_IN_10_2_FSINFO = {"total-bytes-privileged"}


def disk_images() -> Tuple[Path, Path]:
    """Small cached images: MBR + ext4 partition, and whole-disk ext4 (opened snapshot=on)."""
    cache, size = vmlib.CACHE_DIR, 16 << 20
    part = vmlib.build_once(cache / "data-small-part-v1.img",
                            lambda tmp: vmlib.build_partitioned_ext4(tmp, size, "qga-small-p1"))
    whole = vmlib.build_once(cache / "data-small-whole-v1.img",
                             lambda tmp: vmlib.build_whole_disk(tmp, size,
                                                                ["mkfs.ext4", "-q", "-F", "-L", "qga-small"]))
    return part, whole


def qemu_disk_args() -> List[str]:
    """QEMU arguments attaching every disk of DISKS (Guest(extra_qemu=...))."""
    part, whole = disk_images()
    argv: List[str] = []

    def drive(ident: str, partitioned: bool) -> None:
        img = part if partitioned else whole
        argv.extend(["-drive", f"file={img},if=none,id={ident},format=raw,snapshot=on"])

    s = {k: v[0] for k, v in DISKS.items()}
    drive("dvscsi", DISKS["virtio-scsi"][1])
    argv += ["-device", f"virtio-scsi-pci,id=vscsi0,bus=pci.0,addr={SLOT['vscsi']:#x}",
             "-device", f"scsi-hd,bus=vscsi0.0,channel=0,scsi-id=1,lun=2,drive=dvscsi,"
                        f"serial={s['virtio-scsi']}"]
    drive("dsata", DISKS["sata"][1])
    argv += ["-device", f"ich9-ahci,id=ahci0,bus=pci.0,addr={SLOT['ahci']:#x}",
             "-device", f"ide-hd,bus=ahci0.2,drive=dsata,serial={s['sata']}"]
    drive("dide0", DISKS["ide-master"][1])
    drive("dide1", DISKS["ide-slave"][1])
    argv += ["-device", f"ide-hd,bus=ide.1,unit=0,drive=dide0,serial={s['ide-master']}",
             "-device", f"ide-hd,bus=ide.1,unit=1,drive=dide1,serial={s['ide-slave']}"]
    drive("dnvme", DISKS["nvme"][1])
    argv += ["-device", f"nvme,serial={s['nvme']},drive=dnvme,bus=pci.0,addr={SLOT['nvme']:#x}"]
    drive("dlsi", DISKS["lsi"][1])
    argv += ["-device", f"lsi53c895a,id=lsi0,bus=pci.0,addr={SLOT['lsi']:#x}",
             "-device", f"scsi-hd,bus=lsi0.0,scsi-id=3,drive=dlsi,serial={s['lsi']}"]
    return argv


# Runs in the guest (the host's dash over 9p). $1.. = module files in load order.
SETUP_SH = r"""
for m in "$@"; do
    n=$(basename "$m" .ko | tr - _)
    grep -q "^$n " /proc/modules || insmod "$m" || echo "insmod $m failed" >&2
done
want=%(ndisks)d
i=0
while :; do
    n=0
    for b in /sys/block/sd* /sys/block/nvme*n*; do [ -e "$b/size" ] && [ "$(cat $b/size)" != 0 ] && n=$((n + 1)); done
    [ $n -ge $want ] && break
    i=$((i + 1)); [ $i -lt 600 ] || { echo "only $n of $want disks appeared" >&2; exit 1; }
    sleep 0.1
done
now=$(cut -d' ' -f1 /proc/uptime | tr -d .)0000
# What 60-persistent-storage.rules would put in the udev database.
udev_props() { # $1 = /sys/block/X
    d=${1##*/}
    case "$d" in
    sd*)
        # ATTRS{vendor}=="ATA": udev compares without the trailing blanks
        if [ "$(sed 's/[[:space:]]*$//' $1/device/vendor)" = ATA ]; then /lib/udev/ata_id --export /dev/$d
        else /lib/udev/scsi_id --export --whitelisted -d /dev/$d && echo ID_BUS=scsi; fi ;;
    nvme*)
        model=$(sed 's/[[:space:]]*$//' $1/device/model)
        serial=$(sed 's/[[:space:]]*$//' $1/device/serial)
        nsid=$(cat $1/nsid)
        echo "ID_SERIAL_SHORT=$serial"; echo "ID_MODEL=$model"; echo "ID_NSID=$nsid"
        # OPTIONS="string_escape=replace": blanks become '_'
        echo "ID_SERIAL=$(printf '%%s' "${model}_${serial}_${nsid}" | tr '[:space:]' _)" ;;
    esac
}
for b in /sys/block/sd* /sys/block/nvme*n*; do
    [ -e "$b/dev" ] || continue
    d=${b##*/}
    props=$(udev_props $b | grep '^ID_' | grep -v '^ID_SERIAL=$')
    db() { { echo "I:$now"; echo "$props" | sed 's/^/E:/'; } > /run/udev/data/b$(cat $1/dev); }
    db $b
    short=$(echo "$props" | sed -n 's/^ID_SERIAL_SHORT=//p')
    mkdir -p /mnt/$short
    fsdev=$d
    for p in $b/$d*; do
        [ -e "$p/partition" ] || continue
        db $p   # udev imports the parent's ID_* into partitions
        fsdev=${p##*/}
    done
    mount -t ext4 /dev/$fsdev /mnt/$short || echo "cannot mount /dev/$fsdev" >&2
done
grep ' /mnt/qga-' /proc/self/mountinfo >&2
"""


def setup_guest_disks(g: vmlib.Guest) -> None:
    """Load the storage drivers, write the udev database, mount every extra disk."""
    assert g.artifacts is not None
    # As the guest sees them: init.sh binds the cache's module tree on /lib/modules/<kver>,
    # while the cache itself is hidden when it lies under the guest's fresh /tmp or /run.
    art = g.artifacts
    mods = [f"/lib/modules/{art.kver}/{p.relative_to(art.moddir)}"
            for p in vmlib.module_load_order(art.moddir, STORAGE_MODULES)]
    script = SETUP_SH % {"ndisks": len(DISKS)}
    st = g.agent.exec_wait("/bin/sh", ["-c", script, "setup", *mods], timeout=150)
    err = st.get("err-data", b"").decode(errors="replace")
    assert st.get("exitcode") == 0, f"disk setup failed ({st}):\n{err}"
    mounted = err.count(" /mnt/qga-")
    assert mounted == len(DISKS), f"{mounted} of {len(DISKS)} disks mounted:\n{err}"


def boot_disk_guest(agent: str, art: vmlib.Artifacts) -> vmlib.Guest:
    timeout = vmlib.DEFAULT_BOOT_TIMEOUT
    g = vmlib.Guest(agent, artifacts=art, name=f"disks-{agent}", extra_qemu=qemu_disk_args())
    try:
        g.boot(timeout=timeout)
        setup_guest_disks(g)
    except BaseException:
        g.close()
        raise
    return g


def boot_both(art: vmlib.Artifacts, kinds: Tuple[str, ...] = ("c", "py")) -> Dict[str, vmlib.Guest]:
    """Boot one guest per agent kind in parallel (TCG boots are CPU-light at first)."""
    out: Dict[str, vmlib.Guest] = {}
    errors: Dict[str, BaseException] = {}

    def run(kind: str) -> None:
        try:
            out[kind] = boot_disk_guest(kind, art)
        except BaseException as e:  # noqa: B902 - reported below
            errors[kind] = e

    threads = [threading.Thread(target=run, args=(k,)) for k in kinds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for g in out.values():
            g.close()
        kind, e = next(iter(errors.items()))
        raise vmlib.GuestError(f"{kind} disk guest: {e}") from e
    return out


# --------------------------------------------------------------------------------------
# Reply analysis


SERIAL_OF = {v[0]: k for k, v in DISKS.items()}


def _kind_of(addr: Dict[str, Any]) -> Optional[str]:
    for kind, udev_serial in UDEV_SERIAL.items():
        if addr.get("serial") == udev_serial:
            return kind
    return None


def fsinfo_by_bus(fsinfo: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    out: Dict[str, Dict[str, Any]] = {}
    for fs in fsinfo:
        if fs["mountpoint"].startswith("/mnt/qga-"):
            out[SERIAL_OF[fs["mountpoint"][len("/mnt/"):]]] = fs
    return out


def disks_by_name(disks: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    return {d["name"]: d for d in disks}


def expected_address(kind: str, dev: str) -> Dict[str, Any]:
    serial, _, bus_type, pci, bus, target, unit = DISKS[kind]
    return {"pci-controller": pci, "bus-type": bus_type, "bus": bus, "target": target, "unit": unit,
            "serial": UDEV_SERIAL[kind], "dev": dev}


# --------------------------------------------------------------------------------------
# Tests


@pytest.fixture(scope="module")
def disk_guests(vm_artifacts: vmlib.Artifacts) -> Iterator[Dict[str, vmlib.Guest]]:
    t0 = time.monotonic()
    guests = boot_both(vm_artifacts)
    vmlib.log(f"disk guests ready in {time.monotonic() - t0:.1f}s")
    try:
        yield guests
    finally:
        for g in guests.values():
            g.close()


@pytest.fixture(scope="module")
def replies(disk_guests: Dict[str, vmlib.Guest]) -> Dict[str, Dict[str, Any]]:
    out: Dict[str, Dict[str, Any]] = {}
    for kind, g in disk_guests.items():
        out[kind] = {"fsinfo": g.agent.execute("guest-get-fsinfo", timeout=60),
                     "disks": g.agent.execute("guest-get-disks", timeout=60),
                     # the guest's own /sys/block directory order (``ls -U``: as read)
                     "readdir": g.agent.sh("ls -U /sys/block").split()}
    return out


@pytest.mark.parametrize("kind", sorted(DISKS))
def test_fsinfo_address_per_bus(replies: Dict[str, Dict[str, Any]], kind: str) -> None:
    got = {agent: fsinfo_by_bus(r["fsinfo"]).get(kind) for agent, r in replies.items()}
    for agent, fs in got.items():
        assert fs is not None, f"{agent}: no fsinfo entry for the {kind} disk"
        assert fs["type"] == "ext4" and len(fs["disk"]) == 1, (agent, fs)
        dev = "/dev/" + fs["name"]
        assert fs["disk"][0] == expected_address(kind, dev), (agent, fs)
    c, py = copy.deepcopy(got["c"]), copy.deepcopy(got["py"])
    for k in ONLY_IN_10_2_FSINFO:
        assert isinstance(py.pop(k), int), py
    for fs in (c, py):
        fs.pop("used-bytes"), fs.pop("total-bytes")  # the guests' filesystems are separate
    # The two guests may name the sd disks in another probe order.
    if kind != "nvme" and c["name"] != py["name"]:
        for fs in (c, py):
            fs["disk"][0]["dev"] = fs["name"] = None
    assert py == c


def _normalise_sd_names(disks: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Rename sdX by serial so guests that probed in another order compare equal."""
    rename: Dict[str, str] = {}
    for d in disks:
        kind = _kind_of(d.get("address", {}))
        if kind is not None:
            rename[d["name"]] = f"/dev/<{kind}>"

    def ren(name: str) -> str:
        for old, new in rename.items():
            if name == old or (name.startswith(old) and name[len(old):].lstrip("p").isdigit()):
                return new + name[len(old):]
        return name

    out = copy.deepcopy(disks)
    for d in out:
        d["name"] = ren(d["name"])
        if "dependencies" in d:
            d["dependencies"] = [ren(x) for x in d["dependencies"]]
        if "address" in d and "dev" in d["address"]:
            d["address"]["dev"] = ren(d["address"]["dev"])
    return out


def _check_discovery_order(disks: List[Dict[str, Any]], readdir: List[str]) -> None:
    """qemu-ga's order in one guest: /sys/block as read, each disk after its partitions, all reversed."""
    whole = [d["name"] for d in disks if not d["partition"]]
    assert whole == ["/dev/" + n for n in reversed(readdir) if "/dev/" + n in whole], (whole, readdir)
    for i, d in enumerate(disks):
        if d["partition"]:
            owner = next(x["name"] for x in disks[i:] if not x["partition"])
            assert d["dependencies"] == [owner], ("partition right before its disk", disks)


def test_get_disks_same_as_qemu_ga_7_2(replies: Dict[str, Dict[str, Any]]) -> None:
    c = _normalise_sd_names(replies["c"]["disks"])
    py = _normalise_sd_names(replies["py"]["disks"])
    # SMART is compared separately (the counters move).
    for d in c + py:
        d.pop("smart", None)
    key = lambda d: d["name"]  # noqa: E731
    assert sorted(py, key=key) == sorted(c, key=key)
    # The order follows the kernel's names (sysfs lists /sys/block by name hash), and the two
    # guests may have probed the sd disks in another order: each agent is held to its guest's
    # directory, and the two replies to each other where the guests named every disk alike.
    for agent in ("c", "py"):
        _check_discovery_order(replies[agent]["disks"], replies[agent]["readdir"])
    raw = {agent: sorted((d["name"], n["name"]) for d, n in zip(replies[agent]["disks"], norm))
           for agent, norm in (("c", c), ("py", py))}
    if raw["c"] == raw["py"]:
        assert [d["name"] for d in py] == [d["name"] for d in c], "same order (reverse discovery)"


def test_get_disks_every_bus(replies: Dict[str, Dict[str, Any]]) -> None:
    for agent, r in replies.items():
        by = disks_by_name(r["disks"])
        seen = set()
        for d in r["disks"]:
            kind = _kind_of(d.get("address", {}))
            if kind is None or d["partition"]:
                continue
            seen.add(kind)
            assert d["address"] == expected_address(kind, d["name"]), (agent, d)
            parts = [n for n, p in by.items() if p["partition"] and p["dependencies"] == [d["name"]]]
            if DISKS[kind][1]:
                want = d["name"] + ("p1" if kind == "nvme" else "1")
                assert parts == [want], (agent, kind, parts)
                names = [x["name"] for x in r["disks"]]
                assert names.index(want) < names.index(d["name"]), "partition before its disk"
            else:
                assert parts == [], (agent, kind, parts)
            assert d.get("dependencies") == [], (agent, d)
        assert seen == set(DISKS), (agent, sorted(seen))


def test_nvme_smart(replies: Dict[str, Dict[str, Any]]) -> None:
    for agent, r in replies.items():
        nvme = [d for d in r["disks"] if _kind_of(d.get("address", {})) == "nvme" and not d["partition"]]
        assert len(nvme) == 1, (agent, r["disks"])
        smart = nvme[0].get("smart")
        assert smart is not None, f"{agent}: no smart for {nvme[0]}"
        assert smart["type"] == "nvme"
        # QEMU's emulated controller: 0 degrees C above 273 K ... it reports 323 K (50 C).
        assert 273 <= smart["temperature"] <= 273 + 100, smart
        assert smart["critical-warning"] == 0 and smart["percentage-used"] == 0, smart
        assert 0 <= smart["available-spare-threshold"] <= smart["available-spare"] <= 100, smart
        for k, v in smart.items():
            if k.endswith("-lo") or k.endswith("-hi"):
                assert isinstance(v, int) and v >= 0, (k, smart)
        assert smart["power-on-hours-hi"] == 0 and smart["power-on-hours-lo"] >= 0, smart
        assert smart["host-read-commands-lo"] > 0, "the guest mounted it: reads happened"
    c = next(d for d in replies["c"]["disks"] if "smart" in d)["smart"]
    py = next(d for d in replies["py"]["disks"] if "smart" in d)["smart"]
    assert list(py) == list(c), "same members in the same order"


def test_udev_db_is_what_udev_rules_compute(disk_guests: Dict[str, vmlib.Guest]) -> None:
    """The database the test wrote agrees with udev's own rules (``udevadm test``, no daemon)."""
    script = r"""
for b in /sys/block/sd* /sys/block/nvme*n*; do
    d=${b##*/}
    want=$(udevadm test --action=add /sys/class/block/$d 2>/dev/null | sed -n 's/^ID_SERIAL=//p')
    have=$(sed -n 's/^E:ID_SERIAL=//p' /run/udev/data/b$(cat $b/dev))
    echo "$d|$want|$have"
done
"""
    out = disk_guests["c"].agent.sh(script, timeout=120)
    rows = [line.split("|") for line in out.splitlines() if line.count("|") == 2]
    assert len(rows) == len(DISKS), out
    for dev, want, have in rows:
        assert want and want == have, (dev, want, have)
    assert sorted(r[1] for r in rows) == sorted(UDEV_SERIAL.values())


# --------------------------------------------------------------------------------------
# Capture for the unit tests (python3 -m tests.vm.test_vm_disks capture)

CAPTURE_DIR = vmlib.REPO_ROOT / "tests" / "data" / "blockdev"
# capture directory vm-<name> -> the DISKS kinds in it ("virtio-blk": the tier's own disks)
CAPTURE_SETS = {"virtio-scsi": ["virtio-scsi"], "sata": ["sata"], "ide": ["ide-master", "ide-slave"],
                "nvme": ["nvme"], "lsi": ["lsi"], "virtio-blk": [vmlib.SERIAL_EXT4, vmlib.SERIAL_XFS]}


def _set_disks(disks: List[Dict[str, Any]], kinds: List[str]) -> List[str]:
    """Device nodes of the whole disks of *kinds* in a guest-get-disks reply."""
    serials = {UDEV_SERIAL.get(k, k) for k in kinds}
    return [d["name"] for d in disks
            if not d["partition"] and d.get("address", {}).get("serial") in serials]


def capture(out_dir: Path = CAPTURE_DIR) -> None:
    """Boot a qemu-ga 7.2 disk guest; store one sysfs/udev subset per bus with 7.2's replies."""
    art = vmlib.prepare()
    g = boot_both(art, ("c",))["c"]
    tmp = Path(vmlib.tempfile.mkdtemp(prefix="qga-cap-"))
    try:
        fsinfo = g.agent.execute("guest-get-fsinfo", timeout=60)
        disks = g.agent.execute("guest-get-disks", timeout=60)
        py, script = shlex.quote(g.python), shlex.quote(str(CAPTURE_DIR / "capture.py"))
        cmds = []
        for name, kinds in CAPTURE_SETS.items():
            devs = _set_disks(disks, kinds)
            assert len(devs) == len(kinds), (name, devs)
            smart = "".join(f" --smart-log {d}" for d in devs if "nvme" in d)
            cmds.append(f"{py} {script} --out /tmp/cap/vm-{name} "
                        f"--only {','.join(d[5:] for d in devs)}{smart}")
        g.agent.sh(" && ".join(cmds) + " && cat /proc/self/mountinfo > /tmp/cap/mountinfo"
                   " && tar -C /tmp/cap -cf /tmp/cap.tar . && rm -rf /tmp/cap", timeout=180)
        tar = g.agent.read_file("/tmp/cap.tar", timeout=120)
        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            tf.extractall(str(tmp))
        mount_dev = {}
        for line in (tmp / "mountinfo").read_text().splitlines():
            f = line.split()
            mount_dev.setdefault(f[4], f[2])
        for name, kinds in CAPTURE_SETS.items():
            devs = set(_set_disks(disks, kinds))
            mine = [dict(d) for d in disks
                    if d["name"] in devs or set(d.get("dependencies", [])) & devs]
            smart = {d["name"]: d.pop("smart") for d in mine if "smart" in d}
            fs = [{"devno": mount_dev.get(f["mountpoint"]), "name": f["name"], "disk": f["disk"]}
                  for f in fsinfo if f["disk"] and any(a.get("dev", "").startswith(tuple(devs))
                                                       for a in f["disk"])]
            dest = out_dir / f"vm-{name}"
            if dest.exists():
                shutil.rmtree(str(dest))
            shutil.copytree(str(tmp / f"vm-{name}"), str(dest), symlinks=True)
            files = {"expected-disks.json": mine, "expected-fsinfo.json": fs}
            if smart:
                files["expected-smart.json"] = smart
            for fname, data in files.items():
                (dest / fname).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            print(f"wrote {dest}: {sorted(devs)}")
    finally:
        g.close()
        shutil.rmtree(str(tmp), ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["capture"]:
        capture()
    else:
        print("usage: python3 -m tests.vm.test_vm_disks capture", file=sys.stderr)
        sys.exit(2)
