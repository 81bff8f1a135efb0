"""The VM tier's artefact cache is safe under concurrency (issue 11: a cold-cache race).

Two threads and two processes build the same artefact at once with a slow builder: both
succeed, the builder runs once, the file is complete and no temporary file is left behind.
No qemu is needed: this exercises ``tests.vm.vmlib.build_once`` itself.
"""
from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path
from typing import List

from tests.vm import vmlib

PAYLOAD = b"x" * (1 << 20)


def _slow_build(tmp: Path) -> None:
    """Write the payload in pieces, slowly, and count the run in a side file."""
    with open(str(tmp.parent / "runs"), "a") as runs:
        runs.write("1\n")
    with open(str(tmp), "wb") as f:
        for i in range(0, len(PAYLOAD), 1 << 18):
            f.write(PAYLOAD[i:i + (1 << 18)])
            f.flush()
            time.sleep(0.05)


def _build_in_process(out: str, results: "multiprocessing.Queue[bytes]") -> None:
    results.put(vmlib.build_once(Path(out), _slow_build).read_bytes())


def _leftovers(cache: Path, out: Path) -> List[str]:
    keep = {out.name, out.name + ".lock", "runs"}
    return sorted(p.name for p in cache.iterdir() if p.name not in keep)


def test_two_threads_build_once(tmp_path: Path) -> None:
    out = tmp_path / "artefact.img"
    seen: List[bytes] = []
    errors: List[BaseException] = []

    def worker() -> None:
        try:
            seen.append(vmlib.build_once(out, _slow_build).read_bytes())
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert seen == [PAYLOAD, PAYLOAD]
    assert (tmp_path / "runs").read_text() == "1\n"
    assert _leftovers(tmp_path, out) == []


def test_two_processes_build_once(tmp_path: Path) -> None:
    out = tmp_path / "artefact.img"
    ctx = multiprocessing.get_context("fork")
    results: "multiprocessing.Queue[bytes]" = ctx.Queue()
    procs = [ctx.Process(target=_build_in_process, args=(str(out), results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert got == [PAYLOAD, PAYLOAD]
    assert (tmp_path / "runs").read_text() == "1\n"
    assert _leftovers(tmp_path, out) == []


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "artefact.img"

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("mkfs failed")

    try:
        vmlib.build_once(out, broken)
    except RuntimeError:
        pass
    else:
        raise AssertionError("the builder's error was swallowed")
    assert not out.exists()
    assert _leftovers(tmp_path, out) == []
    assert vmlib.build_once(out, _slow_build).read_bytes() == PAYLOAD
