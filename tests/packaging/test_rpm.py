"""RPM packaging, proven on this Debian machine.

build-rpm.sh (rpmbuild with compat.macros) -> rpmlint with the rpmlintrc ->
`rpm --root SCRATCH -i --nodeps --noscripts` -> the installed qemu-ga-py,
qga-client, unit and man page work from that root -> erase.

Missing tools are failures with the package to install, never silent skips:
CI installs rpm, rpmlint and friends (see build-rpm.sh's header).
"""
from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from tests.prereq import require

REPO = Path(__file__).resolve().parents[2]
RPMDIR = REPO / "packaging" / "rpm"
SPEC = RPMDIR / "qemu-ga-py.spec"
RPMLINTRC = RPMDIR / "qemu-ga-py.rpmlintrc"
SITELIB = "usr/lib/python3/dist-packages"  # compat.macros: Debian's system python layout
ALIEN = "use Alien instead"  # Debian's rpm nags on every call


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not found: install the Debian package '{package}'")
    return path


def run(cmd: List[str], **kw: object) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)  # type: ignore[call-overload]
    res.stderr = "\n".join(ln for ln in res.stderr.splitlines() if ALIEN not in ln)
    return res


def spec_version() -> str:
    m = re.search(r"^Version:\s*(\S+)", SPEC.read_text(), re.M)
    assert m
    return m.group(1)


class Built:
    def __init__(self, topdir: Path, rpm: Path, srpm: Path, log: str) -> None:
        self.topdir, self.rpm, self.srpm, self.log = topdir, rpm, srpm, log


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    need("rpmbuild", "rpm")
    topdir = tmp_path_factory.mktemp("rpmbuild")
    res = run(["bash", str(RPMDIR / "build-rpm.sh"), str(topdir)], cwd=str(REPO))
    log = res.stdout + res.stderr
    assert res.returncode == 0, f"build-rpm.sh failed:\n{log[-6000:]}"
    lines = res.stdout.strip().splitlines()
    rpm, srpm = Path(lines[-2]), Path(lines[-1])
    assert rpm.name == f"qemu-ga-py-{spec_version()}-1.noarch.rpm"
    assert srpm.name.endswith(".src.rpm")
    return Built(topdir, rpm, srpm, log)


def query(pkg: Path, *args: str) -> str:
    res = run(["rpm", "-qp", *args, str(pkg)])
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_spec_version_matches_package() -> None:
    from qga import __version__
    assert spec_version() == __version__


def test_rpmbuild_contents(built: Built) -> None:
    files = set(query(built.rpm, "-l").split())
    for path in ("/usr/bin/qemu-ga-py", "/usr/bin/qga-client",
                 "/usr/lib/systemd/system/qemu-ga-py.service",
                 "/usr/lib/udev/rules.d/99-qemu-ga-py.rules",
                 "/etc/sysconfig/qemu-ga-py", "/etc/qemu/qemu-ga.conf",
                 "/etc/qemu/fsfreeze-hook", "/etc/qemu/fsfreeze-hook.d",
                 "/usr/share/man/man8/qemu-ga-py.8.gz", "/usr/share/man/man1/qga-client.1.gz",
                 f"/{SITELIB}/qga/__init__.py", f"/{SITELIB}/qga/sdnotify.py",
                 f"/{SITELIB}/qga/host/client.py", f"/{SITELIB}/qga/cli.py"):
        assert path in files, path
    # pip's bookkeeping is stripped, as on Fedora.
    assert not any(f.endswith(("/INSTALLER", "/direct_url.json", "/REQUESTED")) for f in files)
    configs = set(query(built.rpm, "-c").split())
    assert configs == {"/etc/sysconfig/qemu-ga-py", "/etc/qemu/qemu-ga.conf", "/etc/qemu/fsfreeze-hook"}
    assert query(built.rpm, "--qf", "%{ARCH}").strip() == "noarch"
    assert "qemu-guest-agent" in query(built.rpm, "--conflicts").split()
    assert "python3-systemd" in query(built.rpm, "--requires").split()
    scripts = query(built.rpm, "--scripts")
    for phase in ("postinstall", "preuninstall", "postuninstall"):
        assert f"{phase} scriptlet" in scripts
    assert "qemu-ga-py.service" in scripts


def test_license_is_marked(built: Built, tmp_path: Path) -> None:
    """COPYING is the package's %license file, with the GPL-2 text; the wheel's copy is in the dist-info."""
    assert query(built.rpm, "-L").split() == ["/usr/share/licenses/qemu-ga-py/COPYING"]
    rpm2cpio = subprocess.run(["rpm2cpio", str(built.rpm)], capture_output=True, check=True).stdout
    subprocess.run(["cpio", "-idm", "--quiet", "./usr/share/licenses/qemu-ga-py/COPYING"],
                   input=rpm2cpio, cwd=str(tmp_path), check=True)
    gpl2 = Path("/usr/share/common-licenses/GPL-2").read_bytes()
    assert (tmp_path / "usr/share/licenses/qemu-ga-py/COPYING").read_bytes() == gpl2
    files = query(built.rpm, "-l").split()
    assert f"/{SITELIB}/qemu_ga_py-{spec_version()}.dist-info/COPYING" in files


def test_rpmlint_clean(built: Built) -> None:
    rpmlint = need("rpmlint", "rpmlint")
    spec = built.topdir / "SPECS" / "qemu-ga-py.spec"
    res = run([rpmlint, "-r", str(RPMLINTRC), str(spec), str(built.rpm), str(built.srpm)])
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert re.search(r"\b0 errors, 0 warnings\b", out), out


def test_man_page_is_generated_and_formats_cleanly(built: Built, tmp_path: Path) -> None:
    root = tmp_path / "x"
    root.mkdir()
    rpm2cpio = subprocess.run(["rpm2cpio", str(built.rpm)], capture_output=True, check=True).stdout
    subprocess.run(["cpio", "-idm", "--quiet", "./usr/share/man/man8/qemu-ga-py.8.gz"],
                   input=rpm2cpio, cwd=str(root), check=True)
    text = gzip.decompress((root / "usr/share/man/man8/qemu-ga-py.8.gz").read_bytes()).decode()
    assert "Generated by qga.host.manpage" in text
    for opt in ("\\-\\-method", "\\-\\-path", "\\-\\-fsfreeze\\-hook", "\\-\\-dump\\-conf", "\\-\\-block\\-rpcs"):
        assert opt in text, opt
    groff = need("groff", "groff-base")
    res = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z"], input=text, capture_output=True, text=True)
    assert res.stderr == "", res.stderr


@pytest.fixture(scope="module")
def installed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The RPM installed into a scratch root (no scripts: there is no /bin/sh there)."""
    require(None if os.geteuid() == 0 else "needs uid 0 (rpm --root)")
    root = tmp_path_factory.mktemp("rpmroot")
    res = run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-i", "--nodeps", "--noscripts",
               str(built.rpm)])
    assert res.returncode == 0, res.stdout + res.stderr
    yield root


def installed_env(root: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root / SITELIB)
    env["QGA_CONF"] = str(root / "etc/qemu/qemu-ga.conf")  # the packaged example config
    return env


def run_installed(root: Path, exe: str, *args: str) -> subprocess.CompletedProcess:
    """Run an installed console script through its own #! interpreter (/usr/bin/python3)."""
    script = root / "usr/bin" / exe
    assert script.read_text().startswith("#!/usr/bin/python3"), script.read_text()[:80]
    # cwd=/ so that the source tree cannot be imported instead of the installed copy.
    return run([str(script), *args], env=installed_env(root), cwd="/")


@pytest.mark.root
def test_installed_files(installed: Path) -> None:
    res = run(["rpm", "--root", str(installed), "--dbpath", "/var/lib/rpm", "-q", "qemu-ga-py"])
    assert res.returncode == 0 and res.stdout.startswith("qemu-ga-py-"), res.stderr
    assert (installed / "etc/qemu/fsfreeze-hook").stat().st_mode & 0o111
    assert (installed / "etc/qemu/fsfreeze-hook.d").is_dir()
    assert (installed / "etc/sysconfig/qemu-ga-py").read_text() == (RPMDIR / "qemu-ga-py.sysconfig").read_text()


@pytest.mark.root
def test_installed_version(installed: Path) -> None:
    from qga import QEMU_VERSION, __version__
    res = run_installed(installed, "qemu-ga-py", "--version")
    assert res.returncode == 0, res.stderr
    assert QEMU_VERSION in res.stdout and __version__ in res.stdout
    # It really ran from the scratch root.
    probe = run(["/usr/bin/python3", "-c", "import qga; print(qga.__file__)"],
                env=installed_env(installed), cwd="/")
    assert probe.stdout.strip().startswith(str(installed / SITELIB)), probe.stdout + probe.stderr


@pytest.mark.root
def test_installed_dump_conf(installed: Path) -> None:
    res = run_installed(installed, "qemu-ga-py", "-D")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("[general]"), res.stdout
    assert re.search(r"^method=virtio-serial$", res.stdout, re.M), res.stdout


@pytest.mark.root
def test_installed_client(installed: Path) -> None:
    res = run_installed(installed, "qga-client", "--help")
    assert res.returncode == 0, res.stderr
    assert "guest-sync" not in res.stderr and "exec" in res.stdout
    res = run_installed(installed, "qga-client", "-s", str(installed / "no.sock"), "ping")
    assert res.returncode == 3 and "cannot connect" in res.stderr


@pytest.mark.root
def test_installed_unit_verifies(installed: Path) -> None:
    """systemd-analyze verify of the unit as installed, with the real ExecStart binary."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from test_systemd_units import host_unit_dir, systemd_analyze
    finally:
        sys.path.pop(0)
    analyze = systemd_analyze()
    units = installed / "usr/lib/systemd/system"
    for unit in host_unit_dir().iterdir():
        dest = units / unit.name
        if not dest.exists() and not dest.is_symlink():
            if unit.is_symlink():
                os.symlink(os.readlink(unit), dest)
            elif unit.is_file():
                shutil.copy2(str(unit), str(dest))
            else:
                shutil.copytree(str(unit), str(dest), symlinks=True)
    res = run([analyze, "verify", "--man=no", f"--root={installed}", "/usr/lib/systemd/system/qemu-ga-py.service"])
    assert res.returncode == 0 and res.stdout == "" and res.stderr == "", res.stdout + res.stderr


@pytest.mark.root
def test_erase(built: Built, tmp_path: Path) -> None:
    """A separate root, so the other tests' root stays intact: install then erase."""
    root = tmp_path / "root"
    root.mkdir()
    base = ["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "--nodeps", "--noscripts"]
    assert run(base + ["-i", str(built.rpm)]).returncode == 0
    res = run(base + ["-e", "qemu-ga-py"])
    assert res.returncode == 0, res.stderr
    assert not (root / "usr/bin/qemu-ga-py").exists()
    assert not (root / SITELIB / "qga").exists()
