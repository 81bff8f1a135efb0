"""The systemd unit and udev rule: `systemd-analyze verify` plus content checks.

`systemd-analyze verify` on the bare file fails on a build machine only
because /usr/bin/qemu-ga-py is not installed (and the man page check runs
`man`).  So the unit is verified inside a scratch root (--root) that holds a
stand-in executable and a copy of the host's system units (for
sysinit.target and friends); --man=no because the man page is checked by
test_rpm.py on the installed package.  verify exits 0 even on unknown keys or
unparsable values (it only warns), so any output at all is a failure.
"""
from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "qemu-ga-py.service"
RULE = REPO / "systemd" / "99-qemu-ga-py.rules"
DEVICE = r"dev-virtio\x2dports-org.qemu.guest_agent.0.device"


def host_unit_dir() -> Path:
    for cand in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if (cand / "sysinit.target").exists():
            return cand
    pytest.fail("no systemd unit directory with sysinit.target: install the Debian package 'systemd'")
    raise AssertionError  # unreachable


def systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze not found: install the Debian package 'systemd'")
    return exe


def verify_in_root(root: Path, unit_text: str, exec_path: str = "/usr/bin/qemu-ga-py") -> subprocess.CompletedProcess:
    """Lay out a minimal root and run systemd-analyze verify on the unit there."""
    analyze = systemd_analyze()
    units = root / "usr/lib/systemd/system"
    if not units.exists():
        shutil.copytree(str(host_unit_dir()), str(units), symlinks=True)
    exe = root / exec_path.lstrip("/")
    if not exe.exists():
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "qemu-ga-py.service").write_text(unit_text)
    return subprocess.run([analyze, "verify", "--man=no", f"--root={root}",
                           "/etc/systemd/system/qemu-ga-py.service"],
                          capture_output=True, text=True, timeout=120)


def test_systemd_analyze_verify_clean(tmp_path: Path) -> None:
    res = verify_in_root(tmp_path / "root", UNIT.read_text())
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout == "" and res.stderr == "", res.stdout + res.stderr


def test_verify_would_catch_mistakes(tmp_path: Path) -> None:
    """Guard the guard: a broken unit must produce output (hence fail the test above)."""
    broken = UNIT.read_text().replace("UMask=0077", "UMask=0077\nRestartSecs=1\nWatchdogSec=soon")
    res = verify_in_root(tmp_path / "root", broken)
    assert "Unknown key" in res.stderr and "WatchdogSec" not in res.stdout
    assert "Failed to parse" in res.stderr


def parse_unit(text: str) -> Dict[str, Dict[str, List[str]]]:
    """Sections -> key -> all values (systemd keys may repeat)."""
    out: Dict[str, Dict[str, List[str]]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_contents() -> None:
    u = parse_unit(UNIT.read_text())
    unit, svc, inst = u["Unit"], u["Service"], u["Install"]
    assert unit["BindsTo"] == [DEVICE]
    assert unit["After"] == [DEVICE]
    assert inst["WantedBy"] == [DEVICE]
    assert unit["Conflicts"] == ["qemu-guest-agent.service"]
    assert unit["IgnoreOnIsolate"] == ["yes"]
    assert svc["Type"] == ["notify"]
    assert svc["NotifyAccess"] == ["main"]
    assert svc["Restart"] == ["always"]
    assert svc["RestartSec"] == ["1"]
    assert svc["UMask"] == ["0077"]
    assert svc["EnvironmentFile"] == ["-/etc/sysconfig/qemu-ga-py"]
    assert svc["WatchdogSec"]
    exec_start = svc["ExecStart"][0].split()
    assert exec_start[0] == "/usr/bin/qemu-ga-py"
    # Unquoted so systemd word-splits the free-form variable.
    assert exec_start[-1] == "$QGA_ARGS"


def test_sysconfig_defines_only_qga_args() -> None:
    text = (REPO / "packaging/rpm/qemu-ga-py.sysconfig").read_text()
    assigned = [ln.split("=", 1)[0] for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert assigned == ["QGA_ARGS"]
    # EnvironmentFile syntax: must be loadable as key=value.
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string("[x]\n" + "\n".join(ln for ln in text.splitlines() if not ln.startswith("#")))


# udev rule syntax: KEY[{attr}] OP "value", tokens separated by ", ".
_TOKEN = re.compile(r'^(?P<key>[A-Z_]+)(\{(?P<attr>[^}]+)\})?(?P<op>==|!=|\+=|-=|:=|=)"(?P<val>[^"]*)"$')


def rule_lines() -> List[str]:
    lines: List[str] = []
    for raw in RULE.read_text().splitlines():
        if raw.strip() and not raw.lstrip().startswith("#"):
            lines.append(raw.strip())
    return lines


def test_udev_rule_syntax_and_meaning() -> None:
    lines = rule_lines()
    assert len(lines) == 1
    tokens = [t.strip() for t in lines[0].split(",")]
    parsed = []
    for tok in tokens:
        m = _TOKEN.match(tok)
        assert m, f"bad udev token {tok!r} (tokens must be comma-separated)"
        parsed.append((m.group("key"), m.group("attr"), m.group("op"), m.group("val")))
    assert ("SUBSYSTEM", None, "==", "virtio-ports") in parsed
    assert ("ATTR", "name", "==", "org.qemu.guest_agent.0") in parsed
    assert ("TAG", None, "+=", "systemd") in parsed
    assert ("ENV", "SYSTEMD_WANTS", "=", "qemu-ga-py.service") in parsed


def _installed_rule_name() -> str:
    """The name the RPM spec installs our udev rule under (and that it is this file)."""
    spec = (REPO / "packaging/rpm/qemu-ga-py.spec").read_text()
    found = re.findall(r"^install -Dpm 0644 (\S+) %\{buildroot\}%\{_udevrulesdir\}/(\S+)$", spec, re.M)
    assert len(found) == 1, found
    source, name = found[0]
    assert REPO / source == RULE
    return name


def _debian_rule_name() -> str:
    """The rule file of Debian's qemu-guest-agent package, as dpkg lists it."""
    res = subprocess.run(["dpkg", "-L", "qemu-guest-agent"], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail("dpkg -L qemu-guest-agent failed: install the Debian package 'qemu-guest-agent' "
                    "(the reference tier needs it too): " + res.stderr.strip())
    rules = [Path(line).name for line in res.stdout.splitlines() if "/rules.d/" in line and line.endswith(".rules")]
    assert len(rules) == 1, rules
    return rules[0]


def test_udev_rule_sorts_after_debian_qemu_guest_agent() -> None:
    """Debian's rule may coexist with ours: ours must be applied later so its
    SYSTEMD_WANTS assignment wins.  udev reads the files of all rules.d
    directories in one order, by file name (strcmp; Python compares ASCII the
    same way).  (Fedora's 99-qemu-guest-agent.rules sorts after ours, but there
    the RPM Conflicts: keeps both from being installed.)"""
    ours, debian = _installed_rule_name(), _debian_rule_name()
    assert ours > debian, (ours, debian)
