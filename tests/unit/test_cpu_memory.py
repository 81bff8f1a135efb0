"""vCPU, memory-block and cpustats readers/writers on captured trees (copies)."""
from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path
from typing import Dict, Set, Tuple

import pytest

from qga.codec import dumps
from qga.commands import cpu_memory
from qga.errors import QgaError
from qga.linux import procstat, sysfs_cpu, sysfs_memory
from qga.linux.sysfs import StepError
from tests.unit.test_system import make_ctx, validate

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def cpu_tree(tmp_path: Path) -> str:
    """A writable copy of this machine's /sys/devices/system/cpu capture."""
    dst = tmp_path / "cpu"
    shutil.copytree(DATA / "sysfs_cpu" / "host", dst)
    (dst / "cpu2").mkdir()
    (dst / "cpu2" / "online").write_text("0\n")
    (dst / "cpu3").mkdir()
    (dst / "cpu3" / "online").write_text("1\n")
    return str(dst)


@pytest.fixture
def mem_tree(tmp_path: Path) -> str:
    dst = tmp_path / "memory"
    shutil.copytree(DATA / "sysfs_memory" / "host", dst)
    return str(dst) + "/"


# -- vCPUs -------------------------------------------------------------------------

def test_read_vcpus_capture(cpu_tree: str) -> None:
    vcpus = {v["logical-id"]: v for v in sysfs_cpu.read_vcpus(cpu_tree)}
    assert set(vcpus) == {0, 1, 2, 3}  # cpufreq, cpuidle, possible... are not cpus
    assert vcpus[0] == {"logical-id": 0, "online": True, "can-offline": False}  # no online file
    assert vcpus[2] == {"logical-id": 2, "online": False, "can-offline": True}
    assert list(vcpus[1]) == ["logical-id", "online", "can-offline"]


def test_vcpus_reply_is_what_the_writer_makes_of_the_entries(tmp_path: Path, cpu_tree: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_memory, "SYSFS_CPU", cpu_tree)
    assert dumps(cpu_memory.get_vcpus(make_ctx(tmp_path))) == dumps(sysfs_cpu.read_vcpus(cpu_tree))


def test_read_vcpus_directory_order(cpu_tree: str) -> None:
    expected = [int(n[3:]) for n in os.listdir(cpu_tree) if n[3:].isdigit() and n.startswith("cpu")]
    assert [v["logical-id"] for v in sysfs_cpu.read_vcpus(cpu_tree)] == expected


def test_read_vcpus_errors(tmp_path: Path, cpu_tree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StepError) as step:
        sysfs_cpu.read_vcpus(str(tmp_path / "nope"))
    assert (step.value.step, step.value.errno) == ("listdir", errno.ENOENT)
    monkeypatch.setattr(cpu_memory, "SYSFS_CPU", str(tmp_path / "nope"))
    with pytest.raises(QgaError, match="^failed to list entries: .*/nope: No such file or directory$"):
        cpu_memory.get_vcpus(make_ctx(tmp_path))
    Path(cpu_tree, "cpu3", "online").write_text("")
    monkeypatch.setattr(cpu_memory, "SYSFS_CPU", cpu_tree)
    with pytest.raises(QgaError) as err:
        cpu_memory.get_vcpus(make_ctx(tmp_path))
    assert err.value.desc == f'pread("{cpu_tree}/cpu3//online"): unexpected EOF'


def test_read_vcpus_failures_keep_qemu_gas_steps(tmp_path: Path, cpu_tree: str) -> None:
    """Each failure is reported as the step qemu-ga takes (opendir cpuN/, open, pread) failed."""
    def desc() -> str:
        with pytest.raises(StepError) as step:
            sysfs_cpu.read_vcpus(cpu_tree)
        return cpu_memory.vcpu_error(step.value).desc

    Path(cpu_tree, "cpu3", "online").unlink()
    Path(cpu_tree, "cpu3", "online").mkdir()  # opens, but cannot be read
    assert desc() == f'pread("{cpu_tree}/cpu3//online"): Is a directory'
    shutil.rmtree(Path(cpu_tree, "cpu3"))
    Path(cpu_tree, "cpu3").write_text("")  # listed, not a directory
    assert desc() == f"Could not open '{cpu_tree}/cpu3/': Not a directory"
    Path(cpu_tree, "cpu3").unlink()
    Path(cpu_tree, "cpu 7").mkdir()  # sscanf("cpu%ld") reads 7: cpu7/ is opened, and is not there
    assert desc() == f"Could not open '{cpu_tree}/cpu7/': No such file or directory"
    Path(cpu_tree, "cpu 7").rmdir()
    Path(cpu_tree, "cpu07").mkdir()  # cpu7/ again, with no online file in it this time
    Path(cpu_tree, "cpu7").symlink_to("cpu07")
    vcpus = [v for v in sysfs_cpu.read_vcpus(cpu_tree) if v["logical-id"] == 7]
    assert vcpus == [{"logical-id": 7, "online": True, "can-offline": False}] * 2


def _cpu_list(text: str) -> Set[int]:
    """The kernel's cpu list format: ``0-3,5``."""
    cpus: Set[int] = set()
    for part in filter(None, text.strip().split(",")):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def test_read_vcpus_live() -> None:
    """Each cpuN directory in readdir order; online per the kernel's online mask."""
    root = Path("/sys/devices/system/cpu")
    online = _cpu_list((root / "online").read_text())
    ids = [int(name[3:]) for name in os.listdir(root) if re.fullmatch(r"cpu[0-9]+", name)]
    assert sysfs_cpu.read_vcpus() == [
        {"logical-id": n, "online": n in online, "can-offline": (root / f"cpu{n}" / "online").exists()}
        for n in ids]


def test_read_vcpus_kept_files_read_afresh_and_follow_the_listing(cpu_tree: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Under /sys/ the directory and the online files stay open: each call reads them
    again, drops what is no longer listed and reopens what fails to read."""
    kept = sysfs_cpu._Kept(cpu_tree)
    try:
        def states() -> Dict[int, Tuple[bool, bool]]:
            return {v["logical-id"]: (v["online"], v["can-offline"])
                    for v in sysfs_cpu._read_vcpus(cpu_tree, kept)}

        assert states() == {v["logical-id"]: (v["online"], v["can-offline"])
                            for v in sysfs_cpu.read_vcpus(cpu_tree)}
        assert states()[2] == (False, True) and set(kept.online) == {1, 2, 3}
        assert states()[0] == (True, False) and kept.absent == {0}  # cpu0 has no online file
        Path(cpu_tree, "cpu0", "online").write_text("0\n")  # now it has one
        assert states()[0] == (False, True) and not kept.absent and 0 in kept.online
        Path(cpu_tree, "cpu2", "online").write_text("1\n")  # the same file, new contents
        assert states()[2] == (True, True)
        shutil.rmtree(Path(cpu_tree, "cpu3"))
        assert 3 not in states() and set(kept.online) == {0, 1, 2}
        os.close(kept.online[2])  # a descriptor that no longer reads, as a removed cpu's
        kept.online[2] = os.open(cpu_tree, os.O_RDONLY)  # (EISDIR where sysfs says ENODEV)
        open_fds = len(os.listdir("/proc/self/fd"))
        assert states()[2] == (True, True)
        assert len(os.listdir("/proc/self/fd")) == open_fds  # the failed one was closed
        assert os.path.samestat(os.fstat(kept.online[2]), os.stat(Path(cpu_tree, "cpu2", "online")))
        monkeypatch.setattr(sysfs_cpu, "KEEP_ONLINE", 0)
        for logical_id in list(kept.online):
            kept.drop(logical_id)
        assert states()[2] == (True, True) and not kept.online
    finally:
        for logical_id in list(kept.online):
            kept.drop(logical_id)
        os.close(kept.fd)


def test_set_vcpus(cpu_tree: str) -> None:
    done = sysfs_cpu.set_vcpus([{"logical-id": 2, "online": True}, {"logical-id": 3, "online": False},
                                {"logical-id": 1, "online": True}], cpu_tree)
    assert done == 3
    assert Path(cpu_tree, "cpu2", "online").read_bytes() == b"1\n"   # one byte at offset 0
    assert Path(cpu_tree, "cpu3", "online").read_bytes() == b"0\n"
    assert Path(cpu_tree, "cpu1", "online").read_text() == "1\n"     # unchanged, still success


def test_set_vcpus_partial_count(tmp_path: Path, cpu_tree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stops at the first failure; the error is only reported for the first entry."""
    assert sysfs_cpu.set_vcpus([{"logical-id": 2, "online": True}, {"logical-id": 0, "online": False},
                                {"logical-id": 3, "online": False}], cpu_tree) == 1
    assert Path(cpu_tree, "cpu3", "online").read_text() == "1\n"
    with pytest.raises(sysfs_cpu.CannotOffline):
        sysfs_cpu.set_vcpus([{"logical-id": 0, "online": False}], cpu_tree)
    monkeypatch.setattr(cpu_memory, "SYSFS_CPU", cpu_tree)
    ctx = make_ctx(tmp_path)
    with pytest.raises(QgaError, match="^logical processor #0 can't be offlined$"):
        cpu_memory.set_vcpus(ctx, [{"logical-id": 0, "online": False}])
    with pytest.raises(QgaError) as err:
        cpu_memory.set_vcpus(ctx, [{"logical-id": 999, "online": True}])
    assert err.value.desc == f"Could not open '{cpu_tree}/cpu999/': No such file or directory"
    assert sysfs_cpu.set_vcpus([], cpu_tree) == 0
    assert sysfs_cpu.set_vcpus([{"logical-id": 0, "online": True}], cpu_tree) == 1


def test_set_vcpus_handler(tmp_path: Path, cpu_tree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_memory, "SYSFS_CPU", cpu_tree)
    args = validate("guest-set-vcpus", {"vcpus": [{"logical-id": 2, "online": True, "can-offline": False}]})
    assert cpu_memory.set_vcpus(make_ctx(tmp_path), **args) == 1
    assert Path(cpu_tree, "cpu2", "online").read_bytes()[:1] == b"1"


@pytest.mark.parametrize("args, desc", [
    ({}, "Parameter 'vcpus' is missing"),
    ({"vcpus": [{"online": True}]}, "Parameter 'vcpus[0].logical-id' is missing"),
    ({"vcpus": [{"logical-id": 1, "online": 1}]}, "Invalid parameter type for 'vcpus[0].online', expected: boolean"),
    ({"vcpus": [{"logical-id": 1, "online": True, "x": 1}]}, "Parameter 'vcpus[0].x' is unexpected"),
])
def test_set_vcpus_validation(args: dict, desc: str) -> None:
    with pytest.raises(QgaError) as err:
        validate("guest-set-vcpus", args)
    assert err.value.desc == desc


# -- memory blocks -------------------------------------------------------------------

def test_read_memory_blocks_capture(mem_tree: str) -> None:
    blocks = sysfs_memory.read_memory_blocks(mem_tree)
    names = sorted(n for n in os.listdir(mem_tree) if n.startswith("memory"))
    assert sorted(b["phys-index"] for b in blocks) == sorted(int(n[6:]) for n in names)
    for b in blocks:
        state = Path(mem_tree, f"memory{b['phys-index']}", "state").read_text()
        removable = Path(mem_tree, f"memory{b['phys-index']}", "removable").read_text()
        assert b == {"phys-index": b["phys-index"], "online": state.startswith("online"),
                     "can-offline": removable[0] != "0"}


def test_read_memory_blocks_edge_cases(tmp_path: Path, mem_tree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sysfs_memory.read_memory_blocks(str(tmp_path / "absent")) == []
    (tmp_path / "empty").mkdir()
    with pytest.raises(sysfs_memory.NoMemoryBlocks):
        sysfs_memory.read_memory_blocks(str(tmp_path / "empty"))
    monkeypatch.setattr(cpu_memory, "SYSFS_MEMORY", str(tmp_path / "empty"))
    with pytest.raises(QgaError, match="^guest reported zero memory blocks!$"):
        cpu_memory.get_memory_blocks(make_ctx(tmp_path))
    os.unlink(os.path.join(mem_tree, "memory1", "removable"))
    os.unlink(os.path.join(mem_tree, "memory2", "state"))
    blocks = {b["phys-index"]: b for b in sysfs_memory.read_memory_blocks(mem_tree)}
    assert blocks[1]["can-offline"] is False
    assert blocks[2] == {"phys-index": 2, "online": True, "can-offline": False}


def test_memory_block_info(tmp_path: Path, mem_tree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    size = int(Path(mem_tree, "block_size_bytes").read_text(), 16)
    assert sysfs_memory.read_block_info(mem_tree) == {"size": size}
    with pytest.raises(StepError) as step:
        sysfs_memory.read_block_info(str(tmp_path / "none"))
    assert (step.value.step, step.value.path, step.value.errno) == ("opendir", f"{tmp_path}/none/", errno.ENOENT)
    monkeypatch.setattr(cpu_memory, "SYSFS_MEMORY", str(tmp_path / "none"))
    with pytest.raises(QgaError) as err:
        cpu_memory.get_memory_block_info(make_ctx(tmp_path))
    assert err.value.desc == f"Could not open '{tmp_path}/none/': No such file or directory"


def test_memory_block_info_live() -> None:
    path = Path("/sys/devices/system/memory/block_size_bytes")
    assert sysfs_memory.read_block_info() == {"size": int(path.read_text(), 16)}


def test_set_memory_blocks(tmp_path: Path, mem_tree: str) -> None:
    Path(mem_tree, "memory3", "state").write_text("offline\n")
    os.unlink(os.path.join(mem_tree, "memory2", "state"))
    result = sysfs_memory.set_memory_blocks([
        {"phys-index": 3, "online": True},    # written
        {"phys-index": 0, "online": True},    # already online: success, no error-code
        {"phys-index": 999, "online": True},  # no such block
        {"phys-index": 2, "online": True},    # quirk: no state file, online -> success + errno
        {"phys-index": 2, "online": False},   # no state file, offline -> not supported
    ], mem_tree)
    assert result == [
        {"phys-index": 3, "response": "success"},
        {"phys-index": 0, "response": "success"},
        {"phys-index": 999, "response": "not-found", "error-code": 2},
        {"phys-index": 2, "response": "success", "error-code": 2},
        {"phys-index": 2, "response": "operation-not-supported", "error-code": 2},
    ]
    assert Path(mem_tree, "memory3", "state").read_text().startswith("online")
    assert sysfs_memory.set_memory_blocks([{"phys-index": 0, "online": False}], str(tmp_path / "no")) == [
        {"phys-index": 0, "response": "operation-not-supported", "error-code": 2}]


def test_set_memory_blocks_write_failure(mem_tree: str) -> None:
    state = Path(mem_tree, "memory4", "state")
    state.unlink()
    state.mkdir()  # reading a directory fails with EISDIR
    assert sysfs_memory.set_memory_blocks([{"phys-index": 4, "online": False}], mem_tree) == [
        {"phys-index": 4, "response": "operation-failed", "error-code": 21}]


def test_set_memory_blocks_handler(tmp_path: Path, mem_tree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_memory, "SYSFS_MEMORY", mem_tree)
    args = validate("guest-set-memory-blocks", {"mem-blks": [{"phys-index": 5, "online": False}]})
    assert cpu_memory.set_memory_blocks(make_ctx(tmp_path), **args) == [{"phys-index": 5, "response": "success"}]
    assert Path(mem_tree, "memory5", "state").read_text() == "offline"


# -- cpustats -------------------------------------------------------------------------

def test_cpustats_capture() -> None:
    text = (DATA / "procstat" / "host-stat").read_text()
    tck = int((DATA / "procstat" / "host-clk_tck").read_text())
    stats = procstat.parse_cpustats(text, tck)
    lines = [ln.split() for ln in text.splitlines() if ln.startswith("cpu") and not ln.startswith("cpu ")]
    assert [s["cpu"] for s in stats] == [int(ln[0][3:]) for ln in lines]
    first = stats[0]
    assert list(first) == ["type", "cpu", "user", "nice", "system", "idle", "iowait", "irq", "softirq",
                           "steal", "guest", "guestnice"]
    assert first["user"] == int(lines[0][1]) * 1000 // tck


def test_cpustats_column_counts() -> None:
    text = "cpu 1 2 3 4\ncpu0 1 2 3 4\ncpu1 1 2 3 4 5\ncpu2 1 2 3 4 5 6 7\ncpu3 1 2 3 4 5 6 7 8 9\nintr 5\n"
    stats = procstat.parse_cpustats(text, 100)
    assert [sorted(set(s) - {"type", "cpu", "user", "nice", "system", "idle"}) for s in stats] == [
        [], ["iowait"], ["iowait", "irq", "softirq"], ["guest", "iowait", "irq", "softirq", "steal"]]
    assert stats[0]["idle"] == 40
    # irq without softirq: softirq 0; leading blanks before the name are skipped, as by sscanf
    six = procstat.parse_cpustats("intr 1 2 3 4 5\n  cpu7 1 2 3 4 5 6\n", 100)
    assert [(s["cpu"], s["irq"], s["softirq"], "steal" in s) for s in six] == [(7, 60, 0, False)]
    # a cpu line with fewer than 4 numbers ends the parse
    assert len(procstat.parse_cpustats("cpu0 1 2 3 4\ncpu1 1 2 3\ncpu2 1 2 3 4\n", 100)) == 1


def test_cpustats_reply_is_what_the_writer_makes_of_the_entries(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler writes its reply from templates: the same bytes as the parsed entries'."""
    texts = [(DATA / "procstat" / "host-stat").read_text(),
             "cpu 1 2 3 4\ncpu0 1 2 3 4\ncpu1 1 2 3 4 5\ncpu2 1 2 3 4 5 6\ncpu3 1 2 3 4 5 6 7 8 9 10 11\n"
             "intr 5\n  cpu7 1 2 3 4 5 6 7\ncpu8 18446744073709551615 2 x 4 5\n"]
    monkeypatch.setattr(cpu_memory, "PROC_STAT", str(tmp_path / "stat"))
    for text in texts:
        (tmp_path / "stat").write_text(text)
        expected = dumps(procstat.parse_cpustats(text, os.sysconf("SC_CLK_TCK")))
        assert dumps(cpu_memory.get_cpustats(make_ctx(tmp_path))) == expected


TEN = " 1 0 30 4 5 6 7 8 9 10"


@pytest.mark.parametrize("text, plain", [
    ((DATA / "procstat" / "host-stat").read_text(), True),
    ("cpu " + TEN + "\ncpu0" + TEN + "\ncpu12 9999999999999999 0 0 0 0 0 0 0 0 0\nintr 1 2\nctxt 5\n", True),
    ("cpu " + TEN + "\ncpu0" + TEN + "\ncpu1 10000000000000000 0 0 0 0 0 0 0 0 0\n", False),  # ticks*1000 wraps
    ("cpu " + TEN + "\ncpu0" + TEN + "\ncpu1 01 0 0 0 0 0 0 0 0 0\n", False),   # a leading zero
    ("cpu " + TEN + "\ncpu0" + TEN + " 11\n", False),                             # an eleventh column
    ("cpu " + TEN + "\ncpu0 1 2 3 4\n", False),                                   # fewer columns
    ("cpu " + TEN + "\ncpu0" + TEN + "\n  cpu7" + TEN + "\n", False),           # blanks before the name
    ("cpu " + TEN + "\nintr 1\ncpu0" + TEN + "\n", True),                       # a cpu line after others
    ("cpu0" + TEN + "\ncpu1" + TEN + "\n", False),                               # no aggregate line first
    ("cpu " + TEN + "\nintr 1\n", False),                                        # no cpu line
])
def test_cpustats_plain_rows_are_the_parsed_rows_as_text(text: str, plain: bool) -> None:
    """The text fast path answers only where it gives the parse's numbers, digit for digit."""
    rows = procstat.plain_rows(text, 100)
    assert (rows is not None) == plain
    if rows is not None:
        assert rows == [[str(v) for v in row] for row in procstat.cpustats_rows(text, 100)]
    assert procstat.plain_rows(text, 250) is None  # other tick rates convert the numbers


def test_cpustats_errors_and_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError):
        procstat.read_cpustats(str(tmp_path / "stat"))
    monkeypatch.setattr(cpu_memory, "PROC_STAT", str(tmp_path / "stat"))
    with pytest.raises(QgaError) as err:
        cpu_memory.get_cpustats(make_ctx(tmp_path))
    assert err.value.desc == f"Could not open '{tmp_path}/stat': No such file or directory"
    assert len(procstat.read_cpustats()) == os.cpu_count()
