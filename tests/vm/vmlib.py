"""Boot a real QEMU guest running a guest agent and drive it from the host.

The guest is Debian's stock kernel with a busybox initramfs (see ``guest/init.sh``):
its root is an overlay whose read-only lower layer is this host's ``/`` over
virtio-9p (or, for suspend tests, an ext4 image holding python3, qemu-ga and the
project), so the guest runs the host's own python3 and the checkout at the same
path.  The agent listens on ``/dev/virtio-ports/org.qemu.guest_agent.0``; the host
talks to it through the ``virtserialport`` chardev's UNIX socket, as libvirt does,
with a QMP socket alongside for SHUTDOWN/RESET/SUSPEND/WAKEUP events.

Build artefacts (kernel, initramfs, disk images) are cached outside the
repository in ``$QGA_VM_CACHE`` (default ``/var/cache/qemu-ga-py-vm``) and built on
demand by :func:`prepare`.  Every wait has a timeout: nothing here may hang a run.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import select
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar

from qga.host import client

REPO_ROOT = Path(__file__).resolve().parents[2]
GUEST_DIR = Path(__file__).resolve().parent / "guest"
CACHE_DIR = Path(os.environ.get("QGA_VM_CACHE", "/var/cache/qemu-ga-py-vm"))

QEMU = os.environ.get("QGA_VM_QEMU", "qemu-system-x86_64")
AGENT_PORT_NAME = "org.qemu.guest_agent.0"
AGENT_PORT_ID = "qga-port0"      # QOM id of the virtserialport (device_del/device_add)
GUEST_STATEDIR = "/run/qga"
GUEST_IP = "10.0.2.15"

# Fixed PCI slots so tests can assert the addresses fsinfo reports.
PCI_SLOT = {"net": 3, "9p": 4, "serial": 5, "ext4": 6, "xfs": 7, "rootfs": 8, "rng": 9}
SERIAL_EXT4 = "qga-data-ext4"
SERIAL_XFS = "qga-data-xfs"
SERIAL_ROOTFS = "qga-rootfs"
MNT_EXT4 = "/mnt/data-ext4"
MNT_XFS = "/mnt/data-xfs"

# Third-party packages the agent imports, copied into the suspend-test root image.
ROOTFS_SITE_PACKAGES = os.environ.get("QGA_VM_ROOTFS_SITE", "serial").split()
DEFAULT_BOOT_TIMEOUT = float(os.environ.get("QGA_VM_BOOT_TIMEOUT", "120"))
APT_PACKAGES = ["qemu-system-x86", "qemu-utils", "busybox-static", "xfsprogs",
                "e2fsprogs", "qemu-guest-agent"]

# Modules the initramfs loads (dependencies are added automatically). crc32c
# is a crypto soft dependency of ext4/xfs that insmod cannot resolve by itself.
# Two independent chains, loaded in parallel by init (module loading dominates
# boot time under TCG): devices, and local filesystems.
MODULE_ROOTS = ["virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "virtio-rng",
                "9pnet_virtio", "9p"]
MODULE_ROOTS_FS = ["overlay", "crc32c_generic", "ext4", "xfs"]
# Hardware-accelerated variants that fail on -cpu qemu64; the generic ones cover them.
MODULE_SKIP = {"crc32c-intel", "crc32c_intel", "crc32-pclmul", "crct10dif-pclmul"}


class VMUnavailable(RuntimeError):
    """The host cannot run the VM tier; the message names what is missing."""


class GuestError(RuntimeError):
    """The guest misbehaved (died, did not boot, protocol violation)."""


class AgentError(RuntimeError):
    """The agent answered with an ``error`` object."""

    def __init__(self, error: Dict[str, Any]) -> None:
        self.error = error
        self.klass = str(error.get("class", ""))
        self.desc = str(error.get("desc", ""))
        super().__init__(f"{self.klass}: {self.desc}")


def log(msg: str) -> None:
    """Progress messages for slow steps (stderr, so pytest -s and the demo show them)."""
    if os.environ.get("QGA_VM_QUIET") != "1":
        print(f"[vm] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Host prerequisites and cached artefacts


def _run(cmd: Sequence[str], timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=True, timeout=timeout, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, **kw)


def _tool(name: str, *extra_dirs: str) -> Optional[str]:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", *extra_dirs])
    return shutil.which(name, path=path)


def missing_prerequisites() -> List[str]:
    """Names of missing host tools, as 'tool (package)'."""
    need = [(QEMU, "qemu-system-x86"), ("qemu-img", "qemu-utils"), ("mkfs.ext4", "e2fsprogs"),
            ("mkfs.xfs", "xfsprogs"), ("dpkg-deb", "dpkg"), ("apt-get", "apt")]
    missing = [f"{t} ({p})" for t, p in need if not _tool(t)]
    if not _is_static_busybox():
        missing.append("static /bin/busybox (busybox-static)")
    if not Path("/usr/sbin/qemu-ga").exists():
        missing.append("/usr/sbin/qemu-ga (qemu-guest-agent)")
    return missing


def _is_static_busybox() -> bool:
    try:
        with open("/bin/busybox", "rb") as f:
            head = f.read(1 << 20)
    except OSError:
        return False
    return head.startswith(b"\x7fELF") and b"/lib64/ld-linux" not in head and b"ld-linux" not in head


def install_prerequisites(timeout: float = 900) -> None:
    """apt-get install what the tier needs (root only; used by CI on a fresh machine)."""
    if os.geteuid() != 0 or not _tool("apt-get"):
        raise VMUnavailable("missing " + ", ".join(missing_prerequisites())
                            + " and cannot apt-get install them (not root or no apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log("apt-get install " + " ".join(APT_PACKAGES))
    install = ["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES]
    for attempt in (1, 2):
        try:
            subprocess.run(install, check=True, timeout=timeout, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
            return
        except (subprocess.SubprocessError, OSError) as e:
            out = getattr(e, "output", b"") or b""
            if attempt == 2:
                raise VMUnavailable(f"apt-get install failed: {e}\n{out.decode(errors='replace')[-2000:]}")
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update"], timeout=timeout, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


@dataclass
class Artifacts:
    """Paths of the cached boot artefacts."""

    kernel: Path
    initrd: Path
    kver: str
    moddir: Path            # /lib/modules/<kver> of the extracted kernel package
    disk_ext4: Path         # MBR disk, partition 1 = ext4 (used with snapshot=on)
    disk_xfs: Path          # whole-disk xfs (used with snapshot=on)


class _CacheLock:
    """Serialises builders (pytest workers, threads, the demo) on the shared cache.

    The lock file is opened anew on every ``with``: flock belongs to the open file
    description, so two threads of one process exclude each other too.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> "_CacheLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + 900
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise VMUnavailable(f"timed out waiting for the cache lock {self.path}")
                time.sleep(0.5)

    def __exit__(self, *exc: Any) -> None:
        os.close(self.fd)


def build_once(out: Path, build: Callable[[Path], None]) -> Path:
    """Return the cached file ``out``, first building it if it is missing.

    ``build(tmp)`` writes the artefact to ``tmp``, a fresh empty file with a unique
    name beside ``out``, which is renamed into place only once ``build`` returns:
    a reader never sees a half-written file.  A per-artefact lock (``<out>.lock``)
    makes a concurrent second caller wait and then reuse the first one's result.
    """
    if out.exists():
        return out
    with _CacheLock(out.with_name(out.name + ".lock")):
        if out.exists():
            return out
        fd, name = tempfile.mkstemp(prefix=out.name + ".", suffix=".part", dir=str(out.parent))
        os.close(fd)
        tmp = Path(name)
        try:
            build(tmp)
            os.replace(str(tmp), str(out))
        finally:
            if tmp.exists():
                tmp.unlink()
    return out


def _kernel_package() -> str:
    """Name of the versioned kernel package that linux-image-amd64 depends on."""
    rx = r"Depends:\s*(linux-image-[0-9][^\s]*-amd64)"
    try:
        out = _run(["apt-cache", "depends", "linux-image-amd64"], timeout=120).stdout
    except subprocess.CalledProcessError as e:
        out = e.output or ""
    m = re.search(rx, out)
    if not m and os.geteuid() == 0:
        log("apt-get update (no linux-image-amd64 in the package lists)")
        subprocess.run(["apt-get", "update"], timeout=600, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        out = _run(["apt-cache", "depends", "linux-image-amd64"], timeout=120).stdout
        m = re.search(rx, out)
    if not m:
        raise VMUnavailable("apt-cache depends linux-image-amd64 names no kernel package:\n" + out)
    return m.group(1)


def _find_kernel_dirs() -> List[Path]:
    return sorted(p for p in (CACHE_DIR / "kernel").glob("*/boot") if p.is_dir())


def ensure_kernel() -> Tuple[Path, str, Path]:
    """Download and extract Debian's kernel package once; returns (vmlinuz, version, moddir)."""
    kdir = CACHE_DIR / "kernel"
    pin = os.environ.get("QGA_VM_KERNEL_PKG")
    existing = [p.parent for p in _find_kernel_dirs()]
    if pin:
        existing = [p for p in existing if p.name == pin]
    if not existing:
        pkg = pin or _kernel_package()
        dest = kdir / pkg
        tmp = Path(tempfile.mkdtemp(prefix="dl-", dir=str(CACHE_DIR)))
        try:
            os.chmod(str(tmp), 0o777)  # apt drops privileges to _apt for downloads
            log(f"apt-get download {pkg}")
            try:
                _run(["apt-get", "download", pkg], cwd=str(tmp), timeout=900)
            except subprocess.CalledProcessError as e:
                raise VMUnavailable(f"apt-get download {pkg} failed:\n{e.output[-2000:]}")
            debs = list(tmp.glob("*.deb"))
            if not debs:
                raise VMUnavailable(f"apt-get download {pkg} produced no .deb")
            x = tmp / "x"
            _run(["dpkg-deb", "-x", str(debs[0]), str(x)], timeout=600)
            kdir.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                shutil.rmtree(str(dest))
            os.rename(str(x), str(dest))
        finally:
            shutil.rmtree(str(tmp), ignore_errors=True)
        existing = [dest]
    root = existing[-1]
    vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))
    if not vmlinuz:
        raise VMUnavailable(f"no vmlinuz in {root}/boot")
    kver = vmlinuz[-1].name[len("vmlinuz-"):]
    moddir = root / "lib" / "modules" / kver
    if not moddir.is_dir():
        raise VMUnavailable(f"no modules in {moddir}")
    return vmlinuz[-1], kver, moddir


def _module_index(moddir: Path) -> Dict[str, Path]:
    idx: Dict[str, Path] = {}
    for p in moddir.rglob("*.ko"):
        idx[p.name[:-3].replace("-", "_")] = p
    return idx


def _module_depends(path: Path) -> List[str]:
    """Hard dependencies from the module's .modinfo section (no kmod needed)."""
    data = path.read_bytes()
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", data)
    if not m or not m.group(1):
        return []
    return [d.decode().replace("-", "_") for d in m.group(1).split(b",") if d]


def module_load_order(moddir: Path, roots: Iterable[str] = MODULE_ROOTS) -> List[Path]:
    """Topologically sorted module files (dependencies first) for *roots*."""
    idx = _module_index(moddir)
    order: List[Path] = []
    seen: set = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen or name in {s.replace("-", "_") for s in MODULE_SKIP}:
            return
        seen.add(name)
        if name not in idx:
            return  # built into the kernel
        for dep in _module_depends(idx[name]):
            visit(dep)
        order.append(idx[name])

    for r in roots:
        visit(r)
    return order


class _Cpio:
    """Minimal writer of the 'newc' cpio format the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: Tuple[int, int] = (0, 0)) -> None:
        nameb = name.encode() + b"\x00"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nameb), 0]
        self.ino += 1
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.buf.write(hdr + nameb)
        self.buf.write(b"\x00" * (-(len(hdr) + len(nameb)) % 4))
        self.buf.write(data)
        self.buf.write(b"\x00" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def ensure_initrd(kver: str, moddir: Path) -> Path:
    """Build (or reuse) the busybox initramfs; its name hashes every input."""
    mods = module_load_order(moddir)
    mods_fs = [m for m in module_load_order(moddir, MODULE_ROOTS_FS) if m not in mods]
    files = [GUEST_DIR / "init.sh", GUEST_DIR / "run-agent.sh", Path("/bin/busybox")]
    h = hashlib.sha256(kver.encode())
    for f in files + mods + [Path("fs")] + mods_fs:
        h.update(f.name.encode())
        h.update(f.read_bytes() if f.is_absolute() else b"")
    out = CACHE_DIR / f"initrd-{kver}-{h.hexdigest()[:16]}.cpio.gz"
    if not out.exists():
        build_once(out, lambda tmp: _build_initrd(tmp, mods, mods_fs))
        for old in CACHE_DIR.glob("initrd-*.cpio.gz"):
            if old != out and time.time() - old.stat().st_mtime > 3600:
                old.unlink()  # stale builds; recent ones may serve a concurrent checkout
    return out


def _build_initrd(dest: Path, mods: List[Path], mods_fs: List[Path]) -> None:
    log(f"building {dest.name} ({len(mods) + len(mods_fs)} modules)")
    c = _Cpio()
    for d in ["bin", "dev", "proc", "sys", "lib", "lib/modules", "tmp", "lower", "up", "newroot"]:
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3)
    c.file("init", (GUEST_DIR / "init.sh").read_bytes(), 0o755)
    c.file("run-agent.sh", (GUEST_DIR / "run-agent.sh").read_bytes(), 0o755)
    c.file("bin/busybox", Path("/bin/busybox").read_bytes(), 0o755)
    for m in mods + mods_fs:
        c.file(f"lib/modules/{m.name}", m.read_bytes())
    c.file("lib/modules/load.list", "".join(m.name + "\n" for m in mods).encode())
    c.file("lib/modules/load-fs.list", "".join(m.name + "\n" for m in mods_fs).encode())
    with gzip.open(str(dest), "wb", compresslevel=6) as f:
        f.write(c.finish())


def _mbr(start_lba: int, sectors: int, ptype: int = 0x83) -> bytes:
    """A one-partition MBR (no sfdisk/parted needed on the host)."""
    entry = struct.pack("<B3sB3sII", 0x00, b"\xfe\xff\xff", ptype, b"\xfe\xff\xff", start_lba, sectors)
    return b"\x00" * 440 + struct.pack("<IH", 0x51A6E9D5, 0) + entry + b"\x00" * 48 + b"\x55\xaa"


def build_partitioned_ext4(dest: Path, size: int, label: str, start_lba: int = 2048) -> None:
    """Write an MBR disk image of ``size`` bytes whose one partition is an ext4 ``label``."""
    fs = dest.with_name(dest.name + ".fs")  # dest is build_once's unique name, so is this
    try:
        with open(str(fs), "wb") as f:
            f.truncate(size - start_lba * 512)
        _run(["mkfs.ext4", "-q", "-F", "-L", label, str(fs)])
        with open(str(dest), "wb") as out, open(str(fs), "rb") as src:
            out.write(_mbr(start_lba, (size >> 9) - start_lba))
            out.seek(start_lba * 512)
            shutil.copyfileobj(src, out, 1 << 20)
            out.truncate(size)
    finally:
        if fs.exists():
            fs.unlink()


def build_whole_disk(dest: Path, size: int, mkfs: Sequence[str]) -> None:
    """Write a ``size``-byte image holding one filesystem made by ``mkfs`` (argv without the path)."""
    with open(str(dest), "wb") as f:
        f.truncate(size)
    _run(list(mkfs) + [str(dest)])


def ensure_data_disks() -> Tuple[Path, Path]:
    """Pristine data disk images; guests open them with snapshot=on so they stay pristine."""
    ext4 = build_once(CACHE_DIR / "data-ext4-v1.img",
                      lambda tmp: build_partitioned_ext4(tmp, 64 << 20, "qga-ext4"))
    # mkfs.xfs 6.x refuses anything under 300 MB
    xfs = build_once(CACHE_DIR / "data-xfs-v1.img",
                     lambda tmp: build_whole_disk(tmp, 320 << 20, ["mkfs.xfs", "-q", "-f", "-L", "qga-xfs"]))
    return ext4, xfs


def host_python() -> str:
    """The real interpreter path (pyenv's shim is a shell script needing pyenv)."""
    return os.path.realpath(sys.executable)


def prepare(install: bool = True) -> Artifacts:
    """Install host tools if allowed and needed, then build or reuse every artefact."""
    missing = missing_prerequisites()
    if missing and install and os.environ.get("QGA_VM_NO_INSTALL") != "1":
        install_prerequisites()
        missing = missing_prerequisites()
    if missing:
        raise VMUnavailable("missing host prerequisites: " + ", ".join(missing))
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with _CacheLock(CACHE_DIR / ".lock"):
        kernel, kver, moddir = ensure_kernel()
        initrd = ensure_initrd(kver, moddir)
        ext4, xfs = ensure_data_disks()
    return Artifacts(kernel, initrd, kver, moddir, ext4, xfs)


def qemu_smoke_test(timeout: float = 60) -> None:
    """Raise VMUnavailable unless qemu-system can at least start a TCG machine."""
    try:
        p = subprocess.run([QEMU, "-machine", "pc,accel=tcg", "-nodefaults", "-display", "none",
                            "-S", "-qmp", "stdio"], input=b'{"execute":"qmp_capabilities"}\n'
                           b'{"execute":"quit"}\n', stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as e:
        raise VMUnavailable(f"{QEMU} cannot run: {e}")
    if p.returncode != 0 or b'"return"' not in p.stdout:
        raise VMUnavailable(f"{QEMU} cannot run a TCG machine (rc={p.returncode}): "
                            + p.stdout.decode(errors="replace")[-1000:])


# --------------------------------------------------------------------------------------
# Sockets


class JsonStream:
    """A JSON-object stream over a UNIX socket, with deadlines on every read (QMP's)."""

    def __init__(self, path: str, connect_timeout: float = 30) -> None:
        self.path = path
        self.sock = _connect_unix(path, connect_timeout)
        self.buf = b""
        self.decoder = json.JSONDecoder()
        self.eof = False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_json(self, obj: Dict[str, Any]) -> None:
        self.send(json.dumps(obj).encode() + b"\n")

    def _fill(self, deadline: float) -> None:
        if self.eof:
            raise EOFError(f"{self.path}: peer closed the connection")
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{self.path}: no reply in time; buffered {self.buf[:200]!r}")
        r, _, _ = select.select([self.sock], [], [], left)
        if not r:
            raise TimeoutError(f"{self.path}: no reply in time; buffered {self.buf[:200]!r}")
        chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
            raise EOFError(f"{self.path}: peer closed the connection")
        self.buf += chunk

    def recv(self, timeout: float) -> Dict[str, Any]:
        """Next JSON object (0xFF sentinels and whitespace between objects are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.buf.lstrip(b" \t\r\n\xff")
            if text:
                try:
                    s = text.decode("utf-8")
                    obj, end = self.decoder.raw_decode(s)
                except (UnicodeDecodeError, ValueError):
                    obj, end = None, -1
                if end >= 0:
                    self.buf = s[end:].encode("utf-8")
                    if not isinstance(obj, dict):
                        raise GuestError(f"non-object JSON from {self.path}: {obj!r}")
                    return obj
            self._fill(deadline)


T = TypeVar("T")


def stop_process(proc: "subprocess.Popen[Any]", timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if ``proc`` has not exited within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def _connect_unix(path: str, timeout: float) -> socket.socket:
    def attempt() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
        except OSError:
            s.close()
            raise
        return s
    return _until_connected(attempt, path, timeout)


def _until_connected(connect: Callable[[], T], path: str, timeout: float) -> T:
    """``connect()``, retried while it fails for up to *timeout* seconds (QEMU creates the socket late)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect()
        except OSError as e:
            if time.monotonic() > deadline:
                raise GuestError(f"cannot connect to {path}: {e}")
            time.sleep(0.05)


class AgentClient:
    """Host side of the agent's virtio-serial channel (QEMU's chardev socket).

    The I/O is qga-client's (:class:`qga.host.client.AgentClient`, raw framing),
    with this module's errors: ``TimeoutError``, ``EOFError``, :class:`AgentError`.
    """

    def __init__(self, path: str, connect_timeout: float = 30, default_timeout: float = 30) -> None:
        self.path = path
        self.conn = client.AgentClient(path, default_timeout)
        _until_connected(self.conn.open, path, connect_timeout)
        self.timeout = default_timeout

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except client.AgentTimeout:
            raise TimeoutError(f"{self.path}: no reply in time; buffered {self.conn.buffered[:200]!r}") from None
        except client.AgentDisconnected:
            raise EOFError(f"{self.path}: peer closed the connection") from None
        except client.AgentError as e:
            raise AgentError({"class": e.cls, "desc": e.desc}) from None

    @property
    def eof(self) -> bool:
        """The channel is closed (the peer closed it, or a read failed)."""
        return not self.conn.connected

    def close(self) -> None:
        self.conn.close()

    def send_raw(self, data: bytes) -> None:
        with self._errors():
            self.conn.send_raw(data)

    def send_json(self, obj: Dict[str, Any]) -> None:
        self.send_raw(json.dumps(obj).encode() + b"\n")

    def drain(self, quiet: float = 0.2) -> bytes:
        """Read and return whatever arrives until the line is quiet for *quiet* seconds."""
        return self.conn.drain(quiet)

    def recv(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Next reply object (a leading 0xFF sentinel and blank lines are skipped)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            with self._errors():
                line = bytes(self.conn.next_line(deadline)).strip(b" \t\r\n\xff")
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                raise GuestError(f"non-JSON reply from {self.path}: {line[:200]!r}") from None
            if not isinstance(obj, dict):
                raise GuestError(f"non-object JSON from {self.path}: {obj!r}")
            return obj

    def cmd(self, name: str, args: Optional[Dict[str, Any]] = None,
            timeout: Optional[float] = None) -> Dict[str, Any]:
        """Send one command; return the whole response object (return or error)."""
        msg: Dict[str, Any] = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        self.send_json(msg)
        return self.recv(timeout)

    def execute(self, name: str, args: Optional[Dict[str, Any]] = None,
                timeout: Optional[float] = None) -> Any:
        """Send one command; return its ``return`` value or raise AgentError."""
        resp = self.cmd(name, args, timeout)
        if "error" in resp:
            raise AgentError(resp["error"])
        if "return" not in resp:
            raise GuestError(f"{name}: unexpected reply {resp!r}")
        return resp["return"]

    def send_no_reply(self, name: str, args: Optional[Dict[str, Any]] = None) -> None:
        """For guest-shutdown/suspend, which reply nothing on success."""
        msg: Dict[str, Any] = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        self.send_json(msg)

    def sync(self, timeout: float = 10, sync_id: Optional[int] = None) -> int:
        """libvirt's handshake: guest-sync with a millisecond-timestamp id; stale replies are dropped."""
        sid = int(time.time() * 1000) if sync_id is None else sync_id
        self.send_json({"execute": "guest-sync", "arguments": {"id": sid}})
        deadline = time.monotonic() + timeout
        while True:
            resp = self.recv(max(0.0, deadline - time.monotonic()))
            if resp.get("return") == sid:
                return sid

    def sync_delimited(self, timeout: float = 10, sync_id: Optional[int] = None) -> int:
        """0xFF, then guest-sync-delimited: resets a half-parsed request in the agent."""
        sid = (int(time.time() * 1000) & 0x7FFFFFFF) if sync_id is None else sync_id
        with self._errors():
            self.conn.sync_skipping(sid, timeout)
        return sid

    # Convenience wrappers used by tests and the demo.

    def exec_wait(self, path: str, args: Sequence[str] = (), input_data: Optional[bytes] = None,
                  timeout: float = 60, env: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """guest-exec with captured output, polled to completion; decodes out/err data."""
        a: Dict[str, Any] = {"path": path, "arg": list(args), "capture-output": True}
        if input_data is not None:
            a["input-data"] = base64.b64encode(input_data).decode()
        if env is not None:
            a["env"] = list(env)
        pid = self.execute("guest-exec", a)["pid"]
        deadline = time.monotonic() + timeout
        while True:
            st = self.execute("guest-exec-status", {"pid": pid})
            if st.get("exited"):
                for k in ("out-data", "err-data"):
                    if k in st:
                        st[k] = base64.b64decode(st[k])
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"guest-exec {path} {args} did not finish in {timeout}s")
            time.sleep(0.1)

    def sh(self, script: str, timeout: float = 60) -> str:
        """Run a shell snippet in the guest; return stdout, raise on non-zero exit."""
        st = self.exec_wait("/bin/sh", ["-c", script], timeout=timeout)
        if st.get("exitcode") != 0:
            raise GuestError(f"guest sh failed ({st.get('exitcode')}, signal {st.get('signal')}): "
                             f"{script!r}\nstdout: {st.get('out-data', b'')!r}\n"
                             f"stderr: {st.get('err-data', b'')!r}")
        return st.get("out-data", b"").decode(errors="replace")

    def read_file(self, path: str, timeout: float = 30) -> bytes:
        """Whole-file read through guest-file-open/read/close."""
        h = self.execute("guest-file-open", {"path": path, "mode": "r"})
        data = b""
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                r = self.execute("guest-file-read", {"handle": h, "count": 65536})
                data += base64.b64decode(r["buf-b64"])
                if r.get("eof") or r["count"] == 0:
                    break
        finally:
            self.execute("guest-file-close", {"handle": h})
        return data


class QMPClient:
    """Just enough QMP: capabilities, commands, and buffered events with waits."""

    def __init__(self, path: str, connect_timeout: float = 30) -> None:
        self.stream = JsonStream(path, connect_timeout)
        greeting = self.stream.recv(connect_timeout)
        if "QMP" not in greeting:
            raise GuestError(f"bad QMP greeting {greeting!r}")
        self.events: List[Dict[str, Any]] = []
        self.execute("qmp_capabilities")

    def close(self) -> None:
        self.stream.close()

    def _pump(self, timeout: float) -> Dict[str, Any]:
        msg = self.stream.recv(timeout)
        if "event" in msg:
            msg["_host_time"] = time.monotonic()
            self.events.append(msg)
        return msg

    def execute(self, name: str, args: Optional[Dict[str, Any]] = None, timeout: float = 30) -> Any:
        msg: Dict[str, Any] = {"execute": name}
        if args:
            msg["arguments"] = args
        self.stream.send_json(msg)
        deadline = time.monotonic() + timeout
        while True:
            resp = self._pump(max(0.0, deadline - time.monotonic()))
            if "event" in resp:
                continue
            if "error" in resp:
                raise GuestError(f"QMP {name}: {resp['error']}")
            return resp.get("return")

    def wait_event(self, name: str, timeout: float = 60, consume: bool = True) -> Dict[str, Any]:
        """Return the first buffered or future event called *name* (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name:
                    if consume:
                        del self.events[i]
                    return ev
            try:
                self._pump(max(0.0, deadline - time.monotonic()))
            except EOFError:
                # QEMU exited; the event can only be in what was already read.
                for i, ev in enumerate(self.events):
                    if ev["event"] == name:
                        return self.events.pop(i) if consume else ev
                raise TimeoutError(f"QEMU exited before QMP event {name}; saw "
                                   f"{[e['event'] for e in self.events]}")
            except TimeoutError:
                raise TimeoutError(f"no QMP event {name} within {timeout}s; saw "
                                   f"{[e['event'] for e in self.events]}")

    def poll_events(self, quiet: float = 0.1) -> List[Dict[str, Any]]:
        """Read events that have already arrived; return all buffered ones."""
        while True:
            try:
                self._pump(quiet)
            except (TimeoutError, EOFError):
                return list(self.events)


# --------------------------------------------------------------------------------------
# The guest


class Guest:
    """One QEMU guest with an agent inside; use as a context manager.

    ``agent`` is ``"py"`` (this project, ``python3 -m qga``) or ``"c"`` (Debian's
    qemu-ga 7.2).  ``root`` is ``"9p"`` (host / over virtio-9p) or ``"disk"`` (an
    ext4 image, for suspend-to-RAM).  ``extra_args`` are appended to the agent's
    command line; ``env`` is exported to it; ``extra_cmdline`` words are appended to
    the kernel command line (e.g. ``qga.sdmask=...`` for ``init="systemd"``).
    """

    def __init__(self, agent: str = "py", *, extra_args: Sequence[str] = (),
                 env: Optional[Dict[str, str]] = None, root: str = "9p", init: str = "agent",
                 smp: int = 2, mem_mb: int = 1024, name: str = "guest",
                 workdir: Optional[str] = None, artifacts: Optional[Artifacts] = None,
                 rootfs_image: Optional[Path] = None, python: Optional[str] = None,
                 repo: Optional[Path] = None, extra_qemu: Sequence[str] = (),
                 extra_cmdline: Sequence[str] = ()) -> None:
        if agent not in ("py", "c", "none"):
            raise ValueError(f"agent must be py, c or none, not {agent!r}")
        self.agent_kind = agent
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.root = root
        self.init = init
        self.smp = smp
        self.mem_mb = mem_mb
        self.name = name
        self.python = python or host_python()
        self.repo = Path(repo or REPO_ROOT)
        self.extra_qemu = list(extra_qemu)
        self.extra_cmdline = list(extra_cmdline)
        self.artifacts = artifacts
        self.rootfs_image = rootfs_image
        self._own_workdir = workdir is None
        # Short path: UNIX socket paths are limited to 107 bytes.
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"qga-vm-{name}-"))
        self.agent_sock = str(self.workdir / "qga.sock")
        self.qmp_sock = str(self.workdir / "qmp.sock")
        self.console_log = self.workdir / "console.log"
        self.qemu_log = self.workdir / "qemu.log"
        self.proc: Optional[subprocess.Popen] = None
        self._qemu_log_f: Optional[Any] = None
        self._agent: Optional[AgentClient] = None
        self._qmp: Optional[QMPClient] = None
        self.boot_seconds: Optional[float] = None
        self.milestones: Dict[str, float] = {}
        self.keep_workdir = False
        self.started_at = 0.0

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> "Guest":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def kernel_cmdline(self) -> str:
        snippet = "QGA_ARGS=" + shlex.quote(" ".join(shlex.quote(a) for a in self.extra_args)) + "\n"
        for k, v in self.env.items():
            snippet += f"export {k}={shlex.quote(v)}\n"
        parts = ["console=ttyS0", "loglevel=4", "panic=-1", "mitigations=off",
                 "no_timer_check", "tsc=unstable", "random.trust_cpu=on", "8250.nr_uarts=1",
                 f"qga.agent={self.agent_kind}", f"qga.root={self.root}", f"qga.init={self.init}",
                 f"qga.python={self.python}", f"qga.repo={self.repo}"]
        if self.artifacts is not None:
            parts.append(f"qga.moddir={self.artifacts.moddir}")
        if snippet.strip() != "QGA_ARGS=''":
            parts.append("qga.sh=" + base64.b64encode(snippet.encode()).decode())
        parts += self.extra_cmdline
        for p in parts:
            if re.search(r"\s", p):
                raise ValueError(f"kernel command line word with whitespace: {p!r}")
        line = " ".join(parts)
        if len(line) > 2000:
            raise ValueError("kernel command line too long; pass less via extra_args/env")
        return line

    def qemu_argv(self) -> List[str]:
        a = self.artifacts
        assert a is not None
        s = PCI_SLOT
        argv = [QEMU, "-name", f"qga-{self.name}", "-machine", "pc,accel=tcg", "-cpu", "qemu64",
                "-smp", f"{self.smp}", "-m", f"{self.mem_mb}", "-nodefaults", "-no-user-config",
                "-display", "none", "-vga", "none",
                # S3 must be on for guest-suspend-ram (PIIX4 property).
                "-global", "PIIX4_PM.disable_s3=0", "-global", "PIIX4_PM.disable_s4=1",
                "-kernel", str(a.kernel), "-initrd", str(a.initrd),
                "-append", self.kernel_cmdline(),
                "-serial", f"file:{self.console_log}",
                "-chardev", f"socket,id=qmp0,path={self.qmp_sock},server=on,wait=off",
                "-mon", "chardev=qmp0,mode=control",
                "-device", f"virtio-serial-pci,id=vser0,bus=pci.0,addr={s['serial']:#x}",
                "-chardev", f"socket,id=qga0,path={self.agent_sock},server=on,wait=off",
                "-device", f"virtserialport,bus=vser0.0,nr=1,chardev=qga0,name={AGENT_PORT_NAME},"
                f"id={AGENT_PORT_ID}",
                "-netdev", "user,id=net0,restrict=on",
                "-device", f"virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,bus=pci.0,addr={s['net']:#x}",
                "-object", "rng-random,id=rng0,filename=/dev/urandom",
                "-device", f"virtio-rng-pci,rng=rng0,bus=pci.0,addr={s['rng']:#x}",
                "-drive", f"file={a.disk_ext4},if=none,id=dext4,format=raw,snapshot=on",
                "-device", f"virtio-blk-pci,drive=dext4,serial={SERIAL_EXT4},bus=pci.0,addr={s['ext4']:#x}",
                "-drive", f"file={a.disk_xfs},if=none,id=dxfs,format=raw,snapshot=on",
                "-device", f"virtio-blk-pci,drive=dxfs,serial={SERIAL_XFS},bus=pci.0,addr={s['xfs']:#x}"]
        if self.root == "9p":
            argv += ["-fsdev", "local,id=fs0,path=/,security_model=none,readonly=on,multidevs=remap",
                     "-device", f"virtio-9p-pci,fsdev=fs0,mount_tag=hostroot,bus=pci.0,addr={s['9p']:#x}"]
        elif self.root == "disk":
            if self.rootfs_image is None:
                raise ValueError("root='disk' needs rootfs_image (see ensure_rootfs_image)")
            argv += ["-drive", f"file={self.rootfs_image},if=none,id=droot,format=raw,readonly=on",
                     "-device", f"virtio-blk-pci,drive=droot,serial={SERIAL_ROOTFS},bus=pci.0,"
                                f"addr={s['rootfs']:#x}"]
        else:
            raise ValueError(f"root must be 9p or disk, not {self.root!r}")
        return argv + self.extra_qemu

    def start(self) -> None:
        """Start QEMU and connect QMP (does not wait for the agent)."""
        if self.artifacts is None:
            self.artifacts = prepare()
        argv = self.qemu_argv()
        (self.workdir / "qemu.cmdline").write_text(" ".join(shlex.quote(x) for x in argv) + "\n")
        self._qemu_log_f = open(str(self.qemu_log), "wb")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._qemu_log_f,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while not (os.path.exists(self.qmp_sock) and os.path.exists(self.agent_sock)):
            self._check_alive("starting QEMU")
            if time.monotonic() > deadline:
                raise GuestError("QEMU did not create its sockets in 30 s\n" + self.diagnostics())
            time.sleep(0.05)
        self._qmp = QMPClient(self.qmp_sock)

    def boot(self, agent: Optional[str] = None, extra_args: Optional[Sequence[str]] = None,
             timeout: float = DEFAULT_BOOT_TIMEOUT, wait_agent: bool = True) -> float:
        """Start the guest and wait until the agent answers guest-sync; returns boot seconds."""
        if agent is not None:
            self.agent_kind = agent
        if extra_args is not None:
            self.extra_args = list(extra_args)
        try:
            return self._boot(timeout, wait_agent)
        except BaseException:
            self.keep_workdir = True  # a failed boot is worth reading later
            raise

    def _boot(self, timeout: float, wait_agent: bool) -> float:
        self.start()
        t0 = self.started_at
        if wait_agent and self.agent_kind != "none":
            deadline = t0 + timeout
            # Milestones (host clock) for the demo and for diagnosing slow boots.
            self.wait_console(r"qga-vm: init: agent=", timeout)
            self.milestones["init started"] = time.monotonic() - t0
            self.wait_console(r"qga-vm: init: root ready", max(1.0, deadline - time.monotonic()))
            self.milestones["root ready"] = time.monotonic() - t0
            self.wait_agent(max(1.0, deadline - time.monotonic()))
            self.milestones["agent synced"] = time.monotonic() - t0
        self.boot_seconds = time.monotonic() - t0
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in self.milestones.items())
        log(f"{self.name}: agent={self.agent_kind} root={self.root} up in {self.boot_seconds:.1f}s "
            f"({steps}; console: {self.console_log})")
        return self.boot_seconds

    def wait_agent(self, timeout: float = DEFAULT_BOOT_TIMEOUT, marker_from: int = 0) -> None:
        """Wait for the 'agent pid' console marker, then a successful guest-sync."""
        deadline = time.monotonic() + timeout
        self.wait_console(r"qga-vm: agent pid \d+", timeout, start=marker_from)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestError("agent did not answer guest-sync\n" + self.diagnostics())
            try:
                if self._agent is None:
                    self._agent = AgentClient(self.agent_sock, connect_timeout=min(left, 10))
                self._agent.sync(timeout=min(left, 3))
                return
            except (TimeoutError, EOFError, OSError, GuestError):
                self._check_alive("waiting for the agent")
                self._check_console_fatal(marker_from)
                if self._agent is not None and self._agent.eof:
                    self._agent.close()
                    self._agent = None

    @property
    def agent(self) -> AgentClient:
        if self._agent is None:
            self._agent = AgentClient(self.agent_sock)
        return self._agent

    @property
    def qmp(self) -> QMPClient:
        if self._qmp is None:
            raise GuestError("QEMU is not running")
        return self._qmp

    def reconnect_agent(self) -> AgentClient:
        """Close the host end of the channel and open it again (host detach/re-attach)."""
        if self._agent is not None:
            self._agent.close()
        self._agent = AgentClient(self.agent_sock)
        return self._agent

    def detach_agent(self) -> None:
        if self._agent is not None:
            self._agent.close()
            self._agent = None

    # -- console and process -------------------------------------------------------------

    def console(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_console(self, pattern: str, timeout: float = 60, start: int = 0) -> "re.Match[str]":
        """Wait for *pattern* in the console log after offset *start*."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.console(), start)
            if m:
                return m
            self._check_alive(f"waiting for console /{pattern}/")
            self._check_console_fatal(start)
            if time.monotonic() > deadline:
                raise GuestError(f"console never showed /{pattern}/ in {timeout}s\n" + self.diagnostics())
            time.sleep(0.1)

    def _check_console_fatal(self, start: int = 0) -> None:
        text = self.console()[start:]
        for rx in (r"qga-vm: FATAL.*", r"qga-vm: agent exited status \d+", r"Kernel panic.*"):
            m = re.search(rx, text)
            if m:
                raise GuestError(f"guest reported: {m.group(0)}\n" + self.diagnostics())

    def _check_alive(self, what: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise GuestError(f"QEMU exited with status {self.proc.returncode} while {what}\n"
                             + self.diagnostics())

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout: float = 60) -> int:
        """Wait for QEMU to exit by itself (e.g. after the guest powered off)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"QEMU still running after {timeout}s\n" + self.diagnostics())

    def diagnostics(self, lines: int = 40) -> str:
        con = self.console().splitlines()[-lines:]
        try:
            ql = self.qemu_log.read_text(errors="replace").splitlines()[-10:]
        except OSError:
            ql = []
        return ("--- console tail ({}) ---\n{}\n--- qemu log tail ---\n{}".format(
            self.console_log, "\n".join(con), "\n".join(ql)))

    def kill(self) -> None:
        """Stop QEMU at once (SIGTERM, then SIGKILL)."""
        if self.proc is not None:
            stop_process(self.proc)

    def quit(self, timeout: float = 10) -> None:
        """Ask QEMU to quit over QMP; kill it if that fails."""
        if self.is_running() and self._qmp is not None:
            try:
                self._qmp.execute("quit", timeout=timeout)
            except (GuestError, TimeoutError, EOFError, OSError):
                pass
            try:
                assert self.proc is not None
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def close(self) -> None:
        """Stop QEMU and release everything; keeps the workdir if QGA_VM_KEEP=1."""
        if self.is_running():
            self.quit()
        self.kill()
        for c in (self._agent, self._qmp):
            if c is not None:
                c.close()
        self._agent = None
        self._qmp = None
        if self._qemu_log_f is not None:
            self._qemu_log_f.close()
            self._qemu_log_f = None
        if self.keep_workdir:
            log(f"{self.name}: kept {self.workdir} (console.log, qemu.log) for diagnosis")
        elif self._own_workdir and os.environ.get("QGA_VM_KEEP") != "1":
            shutil.rmtree(str(self.workdir), ignore_errors=True)

    # -- guest-side helpers ------------------------------------------------------------------

    def agent_pid(self) -> int:
        return int(self.agent.read_file("/run/qga-vm/agent.pid").decode().strip())

    def agent_cpu_seconds(self, pid: Optional[int] = None) -> float:
        """utime+stime of the agent process, read through the agent itself."""
        pid = pid or self.agent_pid()
        stat = self.agent.read_file(f"/proc/{pid}/stat").decode()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ensure_rootfs_image(agent: str = "py", python: Optional[str] = None,
                        repo: Optional[Path] = None) -> Path:
    """A read-only ext4 lower layer with what the agent needs (suspend tests: no 9p).

    Holds busybox as /bin/sh and friends, qemu-ga with its libraries, the host
    python (stdlib + pyserial) and the checkout's ``qga`` package at the same
    paths as on the host. Rebuilt when the package or these inputs change.
    """
    python = python or host_python()
    repo = Path(repo or REPO_ROOT)
    prefix = Path(python).resolve().parent.parent
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    h = hashlib.sha256()
    pkg = [p for p in sorted((repo / "qga").rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    h.update(" ".join(ROOTFS_SITE_PACKAGES).encode())
    # This file too: _stage_rootfs decides the image's layout.
    for p in pkg + [GUEST_DIR / "init.sh", Path(python), Path(__file__)]:
        h.update(str(p).encode())
        st = p.stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    out = CACHE_DIR / f"rootfs-{h.hexdigest()[:16]}.img"

    def build(tmp: Path) -> None:
        log("building the ext4 rootfs image for suspend tests")
        stage = Path(tempfile.mkdtemp(prefix="rootfs-", dir=str(CACHE_DIR)))
        try:
            _stage_rootfs(stage, python, prefix, pyver, repo)
            size_mb = int(_du_bytes(stage) * 1.3 / (1 << 20)) + 64
            with open(str(tmp), "wb") as f:
                f.truncate(size_mb << 20)
            _run(["mkfs.ext4", "-q", "-F", "-L", "qga-rootfs", "-d", str(stage), str(tmp)], timeout=600)
        finally:
            shutil.rmtree(str(stage), ignore_errors=True)

    if not out.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        build_once(out, build)
        for old in CACHE_DIR.glob("rootfs-*.img"):
            if old != out:
                old.unlink()  # hundreds of MB each, rebuilt on every change of qga/
    return out


def _du_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(str(root)):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def _copy_into(stage: Path, src: Path) -> None:
    """Copy *src* (file, symlink or tree) to the same absolute path under *stage*."""
    dst = stage / str(src).lstrip("/")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        if not os.path.lexists(str(dst)):
            os.symlink(os.readlink(str(src)), str(dst))
        _copy_into(stage, src.resolve())
    elif src.is_dir():
        shutil.copytree(str(src), str(dst), symlinks=True, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("test", "tests", "idlelib", "tkinter",
                                                      "turtledemo", "ensurepip", "site-packages",
                                                      "lib2to3", "__pycache__"))
    elif src.exists() and not dst.exists():
        shutil.copy2(str(src), str(dst))


def _ldd(binary: Path) -> List[Path]:
    try:
        out = _run(["ldd", str(binary)], timeout=30).stdout
    except (subprocess.CalledProcessError, OSError):
        return []
    libs = re.findall(r"(/[^\s]+)\s+\(0x", out)
    return [Path(x) for x in libs]


def _stage_rootfs(stage: Path, python: str, prefix: Path, pyver: str, repo: Path) -> None:
    for d in ["proc", "sys", "dev", "run", "tmp", "etc", "root", "mnt", "var/run", "usr/sbin",
              "usr/bin", "usr/lib", "lib64"]:
        (stage / d).mkdir(parents=True, exist_ok=True)
    for link, target in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")]:
        os.symlink(target, str(stage / link))
    shutil.copy2("/bin/busybox", str(stage / "usr/bin/busybox"))
    for app in ["sh", "cat", "echo", "ls", "sleep", "date", "sync", "cut", "tr", "mkdir", "rm",
                "mv", "cp", "uname", "ps", "grep", "sed", "id", "hwclock", "dd", "head"]:
        os.symlink("busybox", str(stage / "usr/bin" / app))
    # Where qemu-ga (and we) run it from, as on Debian: guest-set-time's hwclock -w / -s.
    os.symlink("../bin/busybox", str(stage / "usr/sbin/hwclock"))
    (stage / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (stage / "etc/group").write_text("root:x:0:\n")
    (stage / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    os.chmod(str(stage / "etc/shadow"), 0o640)
    shutil.copy2("/etc/os-release", str(stage / "etc/os-release")) if Path("/etc/os-release").exists() else None
    # Debian's busybox has no chpasswd: the host's, with the PAM stack it runs
    # (guest-set-user-password), as a Debian guest has it.
    pam = Path("/lib/x86_64-linux-gnu/security")
    bins = [Path("/usr/sbin/qemu-ga"), Path(python), Path("/usr/sbin/chpasswd"),
            pam / "pam_unix.so", pam / "pam_deny.so", pam / "pam_permit.so"]
    for conf in ["/etc/pam.d/chpasswd", "/etc/pam.d/common-password", "/etc/login.defs"]:
        _copy_into(stage, Path(conf))
    for b in bins:
        _copy_into(stage, b)
        for lib in _ldd(b.resolve()):
            _copy_into(stage, lib)
    stdlib = prefix / "lib" / pyver
    _copy_into(stage, stdlib)
    for so in (stdlib / "lib-dynload").glob("*.so"):
        for lib in _ldd(so):
            _copy_into(stage, lib)
    # Third-party modules the agent imports, from the host interpreter's site-packages.
    site = stdlib / "site-packages"
    for name in ROOTFS_SITE_PACKAGES:
        for p in site.glob(name):
            _copy_into(stage, p)
            for so in p.rglob("*.so"):
                for lib in _ldd(so):
                    _copy_into(stage, lib)
    for p in (repo / "qga").rglob("*"):
        if "__pycache__" not in p.parts and p.is_file():
            _copy_into(stage, p)


def _main(argv: Optional[Sequence[str]] = None) -> int:
    """``python3 -m tests.vm.vmlib prepare|boot [c|py]`` for manual use."""
    args = list(sys.argv[1:] if argv is None else argv)
    cmd = args[0] if args else "prepare"
    a = prepare()
    print(a)
    if cmd == "boot":
        with Guest(args[1] if len(args) > 1 else "c", artifacts=a, name="manual") as g:
            g.boot()
            print(json.dumps(g.agent.execute("guest-info"), indent=1)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(_main())
