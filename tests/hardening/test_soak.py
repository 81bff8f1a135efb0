"""Soak: many mixed requests over the unix socket; RSS and descriptors do not grow (issue 8).

The mix per cycle: guest-ping, guest-info, guest-get-osinfo, guest-file-open
+ read + close of a 4 KiB file, and every fourth cycle guest-exec of
``/bin/true`` followed by guest-exec-status until it has exited.  Rows whose
command is not registered in this build are left out, naming the command.

After a warm-up (10 % of the requests, at least 2,000) the agent's RSS and
open descriptors are taken as the baseline; at the end RSS may have grown by
less than 2 MiB and the descriptor count must be unchanged.

Budget: ``QGA_SOAK_REQUESTS`` (20,000 in CI; 1,000,000 with ``QGA_FULL=1``).
Figures are printed (run with ``-s``) and written to ``$QGA_SOAK_REPORT``
when set.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import warnings
from typing import Any, Dict, List

from tests.agentproc import AgentProcess, AgentTimeout, Conn
from tests.hardening.util import budget, fd_count, rss_kib, thread_count

REQUESTS = budget("QGA_SOAK_REQUESTS", 20000, 1000000)
RSS_LIMIT_KIB = 2048


def registered(conn: Conn) -> Dict[str, bool]:
    """Command name -> enabled, from guest-info."""
    return {c["name"]: c["enabled"] for c in conn.cmd("guest-info")["supported_commands"]}


class Mix:
    """One cycle of the soak mix; counts requests."""

    ROWS = {"ping": ["guest-ping"], "info": ["guest-info"], "osinfo": ["guest-get-osinfo"],
            "file": ["guest-file-open", "guest-file-read", "guest-file-close"],
            "exec": ["guest-exec", "guest-exec-status"]}

    def __init__(self, conn: Conn, path: str, commands: Dict[str, bool]) -> None:
        self.conn = conn
        self.path = path
        self.rows = []
        for row, names in self.ROWS.items():
            missing = [n for n in names if not commands.get(n)]
            if missing:
                warnings.warn(f"soak row {row!r} left out: {', '.join(missing)} not registered/enabled")
            else:
                self.rows.append(row)
        self.count = 0
        self.cycle = 0
        self.pending_pids: List[int] = []

    def call(self, name: str, **args: Any) -> Any:
        self.count += 1
        return self.conn.cmd(name, **args)

    def run_cycle(self) -> None:
        self.cycle += 1
        if "ping" in self.rows:
            self.call("guest-ping")
            self.call("guest-ping")
        if "info" in self.rows and self.cycle % 2 == 0:
            assert self.call("guest-info")["version"]
        if "osinfo" in self.rows and self.cycle % 2 == 1:
            self.call("guest-get-osinfo")
        if "file" in self.rows:
            handle = self.call("guest-file-open", path=self.path, mode="r")
            assert self.call("guest-file-read", handle=handle, count=4096)["count"] == 4096
            self.call("guest-file-close", handle=handle)
        if "exec" in self.rows:
            still = []
            for pid in self.pending_pids:
                if not self.call("guest-exec-status", pid=pid)["exited"]:
                    still.append(pid)
            self.pending_pids = still
            if self.cycle % 4 == 0:
                self.pending_pids.append(self.call("guest-exec", path="/bin/true")["pid"])

    def drain_execs(self) -> None:
        """Collect every started child (so no pipe or record is in flight)."""
        deadline = time.monotonic() + 30
        while self.pending_pids and time.monotonic() < deadline:
            self.run_cycle_exec_only()
            time.sleep(0.01)
        assert not self.pending_pids, f"children never exited: {self.pending_pids}"

    def run_cycle_exec_only(self) -> None:
        self.pending_pids = [pid for pid in self.pending_pids
                             if not self.call("guest-exec-status", pid=pid)["exited"]]


def agent_stacks(pid: int) -> str:
    """Where the agent's threads are (py-spy when installed, else kernel wait channels)."""
    if shutil.which("py-spy"):
        out = subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True,
                             timeout=60, check=False)
        return out.stdout + out.stderr
    lines = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/wchan", encoding="ascii") as f:
                lines.append(f"thread {tid}: {f.read()}")
        except OSError:
            pass
    return "\n".join(lines)


def test_soak(agent: AgentProcess, agent_dir: str) -> None:
    """REQUESTS mixed requests: RSS growth < 2 MiB and no descriptor growth after warm-up."""
    path = os.path.join(agent_dir, "soak.dat")
    with open(path, "wb") as f:
        f.write(os.urandom(8192))
    conn = agent.connect(timeout=30)
    conn.sync()
    mix = Mix(conn, path, registered(conn))
    assert mix.rows, "no soak row can run"
    warmup = max(2000, REQUESTS // 10)
    while mix.count < warmup:
        mix.run_cycle()
    if "exec" in mix.rows:
        mix.drain_execs()
    base_rss, base_fds, base_threads = rss_kib(agent.pid), fd_count(agent.pid), thread_count(agent.pid)
    start, peak = time.monotonic(), base_rss
    measured_from = mix.count
    try:
        while mix.count < REQUESTS:
            mix.run_cycle()
            if mix.cycle % 500 == 0:
                peak = max(peak, rss_kib(agent.pid))
    except AgentTimeout as exc:
        raise AssertionError(f"agent stopped answering after {mix.count} requests: {exc}\n"
                             f"{agent_stacks(agent.pid)}") from None
    if "exec" in mix.rows:
        mix.drain_execs()
    elapsed = time.monotonic() - start
    end_rss, end_fds, end_threads = rss_kib(agent.pid), fd_count(agent.pid), thread_count(agent.pid)
    peak = max(peak, end_rss)
    report = {"requests": mix.count, "measured": mix.count - measured_from, "rows": mix.rows,
              "seconds": round(elapsed, 1), "req_per_s": round((mix.count - measured_from) / elapsed),
              "rss_kib": {"baseline": base_rss, "peak": peak, "end": end_rss,
                          "growth": end_rss - base_rss},
              "fds": {"baseline": base_fds, "end": end_fds},
              "threads": {"baseline": base_threads, "end": end_threads}}
    print("soak:", json.dumps(report))
    if os.environ.get("QGA_SOAK_REPORT"):
        with open(os.environ["QGA_SOAK_REPORT"], "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    assert end_rss - base_rss < RSS_LIMIT_KIB, report
    assert end_fds == base_fds, report
    assert end_threads <= base_threads + 1, report
    conn.sync()
