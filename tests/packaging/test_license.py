"""The GPL-2 text ships in the sdist and the wheel (the RPM's %license: test_rpm.py).

Both are built the way build-rpm.sh builds them: Debian's system python
(setuptools 66, wheel), no build isolation, no index, from a copy of the
files git tracks.
"""
from __future__ import annotations

import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3"  # the RPM build's interpreter (python3-setuptools, python3-wheel)
GPL2 = Path("/usr/share/common-licenses/GPL-2")


def test_copying_is_the_gpl2_text() -> None:
    assert (REPO / "COPYING").read_bytes() == GPL2.read_bytes()


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sdist, then a wheel built from the unpacked sdist (as pip does), in one directory."""
    src = tmp_path_factory.mktemp("src")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=str(REPO), capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(str(REPO / name), str(src / name))
    out = tmp_path_factory.mktemp("dist")
    sdist = subprocess.run([PYTHON, "-c", "import sys; from setuptools import build_meta as b; "
                            "print(b.build_sdist(sys.argv[1]))", str(out)],
                           cwd=str(src), capture_output=True, text=True, timeout=300)
    assert sdist.returncode == 0, sdist.stderr[-3000:]
    unpacked = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(str(out / sdist.stdout.split()[-1])) as tf:
        tf.extractall(str(unpacked))
    (top,) = unpacked.iterdir()
    wheel = subprocess.run([PYTHON, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "--disable-pip-version-check", "--wheel-dir", str(out), "."],
                           cwd=str(top), capture_output=True, text=True, timeout=300)
    assert wheel.returncode == 0, wheel.stdout[-3000:] + wheel.stderr[-3000:]
    return out


def test_sdist_carries_copying(dists: Path) -> None:
    (sdist,) = dists.glob("*.tar.gz")
    with tarfile.open(str(sdist)) as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith("/COPYING") and m.name.count("/") == 1)
        assert tf.extractfile(member).read() == GPL2.read_bytes()  # type: ignore[union-attr]
        pkg_info = next(m for m in tf.getmembers() if m.name.endswith("/PKG-INFO") and m.name.count("/") == 1)
        assert "License-File: COPYING" in tf.extractfile(pkg_info).read().decode().splitlines()  # type: ignore[union-attr]


def test_wheel_carries_copying(dists: Path) -> None:
    (wheel,) = dists.glob("*.whl")
    with zipfile.ZipFile(str(wheel)) as zf:
        (info,) = {n.split("/")[0] for n in zf.namelist() if n.split("/")[0].endswith(".dist-info")}
        assert zf.read(f"{info}/COPYING") == GPL2.read_bytes()
        assert "License-File: COPYING" in zf.read(f"{info}/METADATA").decode().splitlines()
