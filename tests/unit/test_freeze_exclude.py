"""fsfreeze-exclude: the entry syntax, the option and key, and what --self-test shows."""
from __future__ import annotations

from pathlib import Path

from qga.cli import build_config, build_parser
from qga.config import Config
from qga.linux.mounts import Mount, exclusion
from qga.selftest import SelfTest


def _mount(dirname: str, devtype: str = "ext4") -> Mount:
    return Mount(dirname, devtype, 8, 1, "/dev/sda1")


def test_slash_entries_are_mount_point_globs_others_filesystem_types() -> None:
    patterns = ["/mnt/scratch*", "xfs", "/data/?"]
    assert exclusion(_mount("/mnt/scratch"), patterns) == "/mnt/scratch*"
    assert exclusion(_mount("/mnt/scratch2/deep"), patterns) == "/mnt/scratch*"  # * crosses /
    assert exclusion(_mount("/srv", "xfs"), patterns) == "xfs"
    assert exclusion(_mount("/data/a"), patterns) == "/data/?"
    assert exclusion(_mount("/data/ab"), patterns) is None
    assert exclusion(_mount("/mnt/xfs"), patterns) is None  # a type never matches a path
    assert exclusion(_mount("/", "ext4"), ["ext"]) is None  # types match exactly
    assert exclusion(_mount("/MNT/scratch"), patterns) is None  # case matters


def test_option_and_key_accumulate(tmp_path: Path) -> None:
    conf = tmp_path / "qga.conf"
    conf.write_text("[general]\nfsfreeze-exclude=/mnt/a*,xfs\n")
    ns = build_parser().parse_args(["-c", str(conf), "--fsfreeze-exclude", "/b", "--fsfreeze-exclude=nfs4"])
    assert sorted(build_config(ns).fsfreeze_exclude) == ["/b", "/mnt/a*", "nfs4", "xfs"]


def test_self_test_shows_excluded_mounts(tmp_path: Path) -> None:
    kept, skipped = tmp_path / "kept", tmp_path / "scratch1"
    kept.mkdir()
    skipped.mkdir()
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"30 1 8:1 / {kept} rw - ext4 /dev/sda1 rw\n"
                         f"31 1 8:2 / {skipped} rw - ext4 /dev/sda2 rw\n"
                         f"32 1 8:3 / /nonexistent-xfs rw - xfs /dev/sda3 rw\n")
    config = Config(method="unix-listen", path=str(tmp_path / "s"), statedir=str(tmp_path),
                    fsfreeze_exclude=[str(tmp_path / "scratch*"), "xfs"])
    test = SelfTest(config, mountinfo=str(mountinfo))
    test.check_mounts()
    assert test.results == [
        ("OK", f"mount {kept} (ext4, /dev/sda1)", "can be frozen"),
        ("INFO", f"mount {skipped} (ext4, /dev/sda2)",
         f"not frozen by guest-fsfreeze-freeze: fsfreeze-exclude entry '{tmp_path}/scratch*' "
         "(freeze-list can still name it)"),
        # Excluded mounts are not opened: a hung one cannot stall the self-test.
        ("INFO", "mount /nonexistent-xfs (xfs, /dev/sda3)",
         "not frozen by guest-fsfreeze-freeze: fsfreeze-exclude entry 'xfs' (freeze-list can still name it)"),
    ]
