#!/usr/bin/env python3
"""Side-by-side benchmark: qemu-ga-py against the system qemu-ga, same run.

Both agents listen on unix sockets in temporary directories.  The client and
every agent process it starts are pinned to one CPU (only the processes this
script starts: ``os.sched_setaffinity`` on itself before spawning, which the
children inherit).  Each row alternates between the two agents, block by
block or repetition by repetition, swapping which goes first, so drift
(frequency scaling, page cache, other load) hits both alike.

    python3 benchmarks/run.py                 # full run -> benchmarks/results/latest.json
    python3 benchmarks/run.py --quick         # CI smoke: few iterations, small sizes
    python3 benchmarks/run.py --rows ping_rtt_p50,pipelined --json /tmp/x.json

Only the standard library is used, so CI needs nothing extra.  The client is
kept out of the timed regions where it would dominate: request bytes are
built before the clock starts, and base64 decoding and SHA-256 checks of bulk
data run after it stops.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import ctypes
import datetime
import hashlib
import json
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from qga.agent import TRIM_DELAY  # noqa: E402
from qga.host.client import AgentClient  # noqa: E402  (the repository's own client)

REPO = Path(__file__).resolve().parent.parent
REFERENCE = "/usr/sbin/qemu-ga"
RESULTS = REPO / "benchmarks" / "results"
MiB = 1 << 20
KINDS = ("ours", "ref")
CLIENT_TIMEOUT = 300.0  # bounds each read and write of the benchmark's client
#: qemu-ga-py with its base64 accelerator (pybase64, when installed) turned off.
STDLIB = "ours_stdlib"
LABEL = {"ours": "qemu-ga-py", "ref": "qemu-ga", STDLIB: "qemu-ga-py (QGA_NO_ACCEL=1)"}

INVENTORY = (
    ("fsinfo", "guest-get-fsinfo"),
    ("interfaces", "guest-network-get-interfaces"),
    ("disks", "guest-get-disks"),
    ("osinfo", "guest-get-osinfo"),
    ("users", "guest-get-users"),
    ("vcpus", "guest-get-vcpus"),
    ("cpustats", "guest-get-cpustats"),
    ("diskstats", "guest-get-diskstats"),
)

# name, unit, better ("lower"/"higher"), target text, target check on the row
ROWS: List[Tuple[str, str, str, str]] = [
    ("startup", "ms", "lower", "ours <= 2x bare python3 -c pass"),
    ("ping_rtt_p50", "us", "lower", "ratio <= 1.0"),
    ("ping_rtt_p99", "us", "lower", "ratio <= 1.0"),
    ("pipelined", "req/s", "higher", "ratio >= 2.0"),
    ("reconnect", "us", "lower", "ratio <= 1.2"),
    ("file_read_4m", "MiB/s", "higher", "ratio >= 10"),
    ("file_read_48m", "MiB/s", "higher", "ratio >= 10"),
    ("file_write_4m", "MiB/s", "higher", "ratio >= 20"),
    # The same rows with the standard library's base64 (QGA_NO_ACCEL=1): the fallback, measured.
    ("file_read_4m_stdlib", "MiB/s", "higher", "- (fallback)"),
    ("file_read_48m_stdlib", "MiB/s", "higher", "- (fallback)"),
    ("file_write_4m_stdlib", "MiB/s", "higher", "- (fallback)"),
    ("exec_true", "ms", "lower", "ratio <= 1.0"),
    ("exec_16m_stdout", "ms", "lower", "ratio <= 1.0"),
] + [(f"inventory_{short}", "ms", "lower", "ratio <= 1.0") for short, _ in INVENTORY] + [
    ("rss_idle", "MiB", "lower", "ours <= 20 MiB"),
    ("rss_peak", "MiB", "lower", "ratio <= 1.0"),
    ("rss_peak_stdlib", "MiB", "lower", "- (fallback)"),
    ("cpu_per_ping", "us", "lower", "ratio <= 1.0"),
]
ROW_NAMES = [r[0] for r in ROWS]

ROW_COMMANDS: Dict[str, Tuple[str, ...]] = {
    "file_read_4m": ("guest-file-open", "guest-file-read", "guest-file-close"),
    "file_read_48m": ("guest-file-open", "guest-file-read", "guest-file-close"),
    "file_write_4m": ("guest-file-open", "guest-file-write", "guest-file-close"),
    "exec_true": ("guest-exec", "guest-exec-status"),
    "exec_16m_stdout": ("guest-exec", "guest-exec-status"),
}
ROW_COMMANDS.update({f"inventory_{short}": (cmd,) for short, cmd in INVENTORY})
ROW_COMMANDS.update({f"{row}_stdlib": ROW_COMMANDS[row] for row in ("file_read_4m", "file_read_48m", "file_write_4m")})


class Params:
    """Iteration counts and sizes for a full or a quick run."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.startup_reps = 3 if quick else 15
        self.pings = 200 if quick else 5000
        self.ping_block = 100 if quick else 500
        self.pipelined = 1000 if quick else 10000
        self.pipelined_reps = 1 if quick else 3
        self.reconnects = 20 if quick else 500
        self.file_size = (8 if quick else 256) * MiB
        self.file_reps = 1 if quick else 3
        self.exec_reps = 3 if quick else 50
        self.exec_out = (1 if quick else 16) * MiB
        self.exec_out_reps = 1 if quick else 5
        self.inventory_reps = 3 if quick else 400


# -- processes ---------------------------------------------------------------------------

#: Byte-compiled modules for qemu-ga-py live here (set by main): the agent is
#: measured as installed (packages ship .pyc), not recompiling its sources at
#: every start because the environment says PYTHONDONTWRITEBYTECODE.
PYCACHE: Optional[str] = None


def agent_env(tmpdir: str, kind: str = "ours") -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("QGA_NO_ACCEL", None)
    if kind == STDLIB:
        env["QGA_NO_ACCEL"] = "1"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if PYCACHE:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = PYCACHE
    for var in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "LISTEN_PID", "LISTEN_FDS", "WATCHDOG_USEC"):
        env.pop(var, None)
    conf = os.path.join(tmpdir, "qemu-ga.conf")  # no site config for either agent
    if not os.path.exists(conf):
        with open(conf, "w") as f:
            f.write("[general]\n")
    env["QGA_CONF"] = conf
    return env


def agent_argv(kind: str, tmpdir: str) -> List[str]:
    sock = os.path.join(tmpdir, "sock")
    if kind != "ref":
        return [sys.executable, "-m", "qga", "-m", "unix-listen", "-p", sock, "-t", tmpdir]
    return [REFERENCE, "-m", "unix-listen", "-p", sock, "-t", tmpdir]


def proc_status(pid: int) -> Dict[str, int]:
    """VmRSS / VmHWM and friends from /proc/PID/status, in KiB."""
    out: Dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Vm"):
                key, _, value = line.partition(":")
                out[key] = int(value.split()[0])
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """utime + stime of the whole process, in seconds (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def proc_runtime_ns(pid: int) -> int:
    """Nanoseconds on CPU of the live threads (/proc/PID/task/*/schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


_libc = ctypes.CDLL(None, use_errno=True)
_IN_CREATE, _IN_NONBLOCK_CLOEXEC = 0x100, 0o4000 | 0o2000000


class SocketWatch:
    """Sleeps in select() on inotify until an agent's socket appears.

    The start-up row uses this instead of connect()'s polling: on the one
    pinned CPU a client that wakes every 0.2 ms takes CPU time from the agent
    it is timing, and a start that lasts longer pays for more of it.  One
    inotify instance serves the whole row: closing one (or removing a watch)
    waits for an RCU grace period, several ms, which must stay off the clock;
    a watch ends by itself when its directory is removed.
    """

    def __init__(self) -> None:
        self.fd = _libc.inotify_init1(_IN_NONBLOCK_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")

    def close(self) -> None:
        os.close(self.fd)

    def watch(self, directory: str) -> None:
        """Report files created in ``directory`` from now on."""
        if _libc.inotify_add_watch(self.fd, directory.encode(), _IN_CREATE) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch")

    def wait(self, path: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
        """Return once ``path`` (in a watched directory) exists."""
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if proc.poll() is not None:
                raise RuntimeError(f"agent exited with status {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("agent socket never appeared")
            select.select([self.fd], [], [], 0.1)  # a create event, or a look at the process
            with contextlib.suppress(BlockingIOError):
                os.read(self.fd, 65536)


def connect(path: str, proc: subprocess.Popen, timeout: float = 30.0) -> AgentClient:
    """A client on the agent's socket, once it accepts.  Each read or write is
    bounded by the socket's own timeout (no select() in the timed path)."""
    deadline = time.monotonic() + timeout
    while True:
        client = AgentClient(path, timeout=CLIENT_TIMEOUT)
        try:
            client.open()
            return client
        except (FileNotFoundError, ConnectionRefusedError):
            if proc.poll() is not None:
                raise RuntimeError(f"agent exited with status {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError("agent socket never appeared") from None
            time.sleep(0.0002)


class Agent:
    """One long-running agent and its current client connection."""

    def __init__(self, kind: str, workdir: str) -> None:
        self.kind = kind
        self.tmpdir = tempfile.mkdtemp(prefix=f"{kind}-", dir=workdir)
        self.sock_path = os.path.join(self.tmpdir, "sock")
        self.logf = open(os.path.join(self.tmpdir, "agent.log"), "ab")
        self.proc = subprocess.Popen(agent_argv(kind, self.tmpdir), cwd=self.tmpdir,
                                     env=agent_env(self.tmpdir, kind), stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=subprocess.STDOUT)
        self.conn = connect(self.sock_path, self.proc)
        self.sync()
        info = self.conn.execute("guest-info")
        self.version = info["version"]
        self.commands = {c["name"] for c in info["supported_commands"] if c["enabled"]}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def sync(self) -> None:
        """0xFF + guest-sync-delimited, skipping anything stale."""
        self.conn.sync()

    def reconnect(self) -> None:
        self.conn.close()
        self.conn = connect(self.sock_path, self.proc)
        self.sync()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def base64_codec(self) -> str:
        """Which base64 codec qemu-ga-py has loaded (it imports pybase64 at first use)."""
        with open(f"/proc/{self.pid}/maps") as f:
            return "pybase64" if "pybase64" in f.read() else "binascii"

    def stop(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


def alternate(reps: int) -> Iterator[Tuple[int, str]]:
    """(rep, kind): ours, ref / ref, ours / ours, ref ... (ABBA-style interleave)."""
    for rep in range(reps):
        for kind in (KINDS if rep % 2 == 0 else KINDS[::-1]):
            yield rep, kind


def pct(values: List[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))
    return s[k]


# -- rows --------------------------------------------------------------------------------

class Bench:
    def __init__(self, params: Params, workdir: str, rows: List[str]) -> None:
        self.p = params
        self.workdir = workdir
        self.wanted = rows
        self.results: Dict[str, Dict[str, Any]] = {}
        self.agents: Dict[str, Agent] = {}

    # bookkeeping ----------------------------------------------------------------
    def record(self, name: str, ours: Optional[float], ref: Optional[float], **extra: Any) -> None:
        self.results[name] = {"ours": ours, "ref": ref, **extra}

    def missing(self, kind: str, row: str) -> Optional[str]:
        lacking = [c for c in ROW_COMMANDS.get(row, ()) if c not in self.agents[kind].commands]
        return f"{LABEL[kind]} lacks {', '.join(lacking)}" if lacking else None

    def run_row(self, name: str, fn: Callable[[], None]) -> None:
        if name not in self.wanted:
            return
        t0 = time.monotonic()
        try:
            fn()
        except Exception as exc:  # keep going: one broken row must not hide the others
            self.results.setdefault(name, {"ours": None, "ref": None})
            self.results[name]["error"] = f"{type(exc).__name__}: {exc}"
            for agent in self.agents.values():
                if agent.alive():
                    try:
                        agent.reconnect()
                    except Exception:
                        pass
        print(f"  {name}: {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)

    def per_agent(self, name: str, fn: Callable[[str], Any], reps: int,
                  ours: str = "ours") -> Dict[str, List[Any]]:
        """Run ``fn(kind)`` interleaved; kinds lacking the row's commands are skipped.

        ``ours`` is the agent that stands for qemu-ga-py in this row (``STDLIB``
        for the fallback rows); samples are keyed "ours"/"ref" either way.
        """
        agent = {"ours": ours, "ref": "ref"}
        samples: Dict[str, List[Any]] = {k: [] for k in KINDS}
        notes = {k: self.missing(agent[k], name) for k in KINDS}
        for _, kind in alternate(reps):
            if notes[kind] is None:
                samples[kind].append(fn(agent[kind]))
        self.results[name] = {"ours": None, "ref": None}
        for kind in KINDS:
            if notes[kind]:
                self.results[name][f"na_{kind}"] = notes[kind]
        return samples

    # startup ---------------------------------------------------------------------
    def startup(self) -> None:
        env = agent_env(self.workdir)
        times: Dict[str, List[float]] = {"bare": [], "ours": [], "ref": []}
        rss: Dict[str, List[float]] = {"ours": [], "ref": []}
        order = ["bare", "ours", "ref"]
        watch = SocketWatch()
        try:
            for rep in range(self.p.startup_reps):
                for kind in order[rep % 3:] + order[:rep % 3]:
                    if kind == "bare":
                        t0 = time.perf_counter()
                        subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
                        times["bare"].append(time.perf_counter() - t0)
                        continue
                    tmp = tempfile.mkdtemp(prefix=f"start-{kind}-", dir=self.workdir)
                    sock = os.path.join(tmp, "sock")
                    watch.watch(tmp)
                    t0 = time.perf_counter()
                    proc = subprocess.Popen(agent_argv(kind, tmp), cwd=tmp, env=env,
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
                    watch.wait(sock, proc)
                    conn = connect(sock, proc)  # bound; listen() follows at once
                    conn.send_raw(b'{"execute":"guest-sync","arguments":{"id":1}}\n')
                    if json.loads(bytes(conn.next_line())) != {"return": 1}:
                        raise RuntimeError("bad guest-sync reply")
                    times[kind].append(time.perf_counter() - t0)
                    rss[kind].append(proc_status(proc.pid)["VmRSS"] / 1024)
                    conn.close()
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(10)
                    shutil.rmtree(tmp, ignore_errors=True)
        finally:
            watch.close()
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        self.record("startup", med["ours"], med["ref"], bare_python=med["bare"],
                    ratio_to_bare=med["ours"] / med["bare"],
                    rss_at_first_reply={k: statistics.median(v) for k, v in rss.items()})

    # pings -----------------------------------------------------------------------
    def ping_rtt(self) -> None:
        rtts: Dict[str, List[float]] = {k: [] for k in KINDS}
        cpu: Dict[str, float] = {k: 0.0 for k in KINDS}
        sched: Dict[str, int] = {k: 0 for k in KINDS}
        reqs = [b'{"execute":"guest-ping","id":%d}\n' % i for i in range(self.p.ping_block)]
        exps = [b'{"return": {}, "id": %d}\n' % i for i in range(self.p.ping_block)]
        blocks = max(1, self.p.pings // self.p.ping_block)
        clock = time.perf_counter_ns
        for _, kind in alternate(blocks):
            agent = self.agents[kind]
            conn = agent.conn
            out = rtts[kind]
            c0, s0 = proc_cpu(agent.pid), proc_runtime_ns(agent.pid)
            for req, exp in zip(reqs, exps):
                t0 = clock()
                conn.send_raw(req)
                line = conn.next_line()
                out.append(clock() - t0)
                if line != exp:
                    raise RuntimeError(f"{kind}: unexpected reply {bytes(line)[:100]!r}")
            cpu[kind] += proc_cpu(agent.pid) - c0
            sched[kind] += proc_runtime_ns(agent.pid) - s0
        n = {k: len(v) for k, v in rtts.items()}
        self.record("ping_rtt_p50", pct(rtts["ours"], 50) / 1000, pct(rtts["ref"], 50) / 1000,
                    samples=n["ours"])
        self.record("ping_rtt_p99", pct(rtts["ours"], 99) / 1000, pct(rtts["ref"], 99) / 1000,
                    samples=n["ours"])
        self.record("cpu_per_ping", cpu["ours"] / n["ours"] * 1e6, cpu["ref"] / n["ref"] * 1e6,
                    pings=n["ours"], source="/proc/PID/stat utime+stime over the ping_rtt pings",
                    schedstat_us={k: sched[k] / n[k] / 1000 for k in KINDS})

    def pipelined(self) -> None:
        n = self.p.pipelined
        request = b"".join(b'{"execute":"guest-ping","id":%d}\n' % i for i in range(n))
        expect = b"".join(b'{"return": {}, "id": %d}\n' % i for i in range(n))
        rates: Dict[str, List[float]] = {k: [] for k in KINDS}
        cpu: Dict[str, float] = {k: 0.0 for k in KINDS}
        for _, kind in alternate(self.p.pipelined_reps):
            agent = self.agents[kind]
            sock = agent.conn.sock
            got = bytearray(len(expect))
            view, rview = memoryview(request), memoryview(got)
            sent = received = 0
            c0 = proc_cpu(agent.pid)
            sock.setblocking(False)
            t0 = time.perf_counter()
            try:
                while received < len(expect):
                    wr = [sock] if sent < len(request) else []
                    r, w, _ = select.select([sock], wr, [], 60)
                    if not r and not w:
                        raise RuntimeError(f"{kind}: pipelined pings stalled at {received} bytes")
                    if w:
                        try:
                            sent += sock.send(view[sent:sent + 65536])
                        except BlockingIOError:
                            pass
                    if r:
                        try:
                            k = sock.recv_into(rview[received:])
                        except BlockingIOError:
                            continue
                        if not k:
                            raise RuntimeError(f"{kind}: agent closed the connection")
                        received += k
            finally:
                elapsed = time.perf_counter() - t0
                sock.settimeout(CLIENT_TIMEOUT)
            cpu[kind] += proc_cpu(agent.pid) - c0
            if got != expect:
                bad = next(i for i in range(len(expect)) if got[i] != expect[i])
                raise RuntimeError(f"{kind}: replies out of order near byte {bad}: "
                                   f"{bytes(got[max(0, bad - 40):bad + 40])!r}")
            rates[kind].append(n / elapsed)
        reps = len(rates["ours"])
        self.record("pipelined", statistics.median(rates["ours"]), statistics.median(rates["ref"]),
                    pings=n, reps=reps,
                    cpu_per_ping_us={k: cpu[k] / (n * reps) * 1e6 for k in KINDS})

    def reconnect(self) -> None:
        times: Dict[str, List[float]] = {k: [] for k in KINDS}
        for _, kind in alternate(self.p.reconnects):
            agent = self.agents[kind]
            t0 = time.perf_counter()
            agent.conn.close()
            agent.conn = AgentClient(agent.sock_path, timeout=CLIENT_TIMEOUT)
            agent.conn.open()
            agent.conn.send_raw(b'{"execute":"guest-sync","arguments":{"id":77}}\n')
            line = agent.conn.next_line()
            times[kind].append(time.perf_counter() - t0)
            if line != b'{"return": 77}\n':
                raise RuntimeError(f"{kind}: unexpected reply {bytes(line)[:100]!r}")
        self.record("reconnect", statistics.median(times["ours"]) * 1e6,
                    statistics.median(times["ref"]) * 1e6, reps=len(times["ours"]))

    # files -----------------------------------------------------------------------
    def _zeroed_target(self, kind: str) -> str:
        """The file ``kind``'s timed writes overwrite ("r+"), filled with zeros (untimed).

        It is made once per agent and kept, so its pages stay in the page cache
        and are only overwritten, never allocated, in the timed region: this
        hypervisor takes back the pages a guest frees (virtio-balloon free page
        reporting) and the next touch of one is costly. A plain 4 MiB os.write
        into such pages took 13 ms here, into cached ones 0.8 ms; allocation
        made the row 8-25x from run to run for the same code. Zeroing it before
        each repetition keeps the SHA-256 check meaningful.
        """
        dest = os.path.join(self.workdir, f"written-{kind}.bin")
        block = bytes(4 * MiB)
        with open(dest, "r+b" if os.path.exists(dest) else "wb") as f:
            for _ in range(self.p.file_size // len(block)):
                f.write(block)
        return dest

    def _data_file(self) -> Tuple[str, str]:
        path = os.path.join(self.workdir, "data.bin")
        if not os.path.exists(path):
            block = os.urandom(MiB)
            h = hashlib.sha256()
            with open(path, "wb") as f:
                for i in range(self.p.file_size // MiB):
                    chunk = i.to_bytes(8, "little") + block[8:]
                    f.write(chunk)
                    h.update(chunk)
            self._data_sha = h.hexdigest()
        return path, self._data_sha

    _B64 = b'"buf-b64": "'

    def _read_once(self, kind: str, path: str, sha: str, chunk: int) -> float:
        conn = self.agents[kind].conn
        handle = conn.execute("guest-file-open", {"path": path, "mode": "r"})
        req = b'{"execute":"guest-file-read","arguments":{"handle":%d,"count":%d}}\n' % (handle, chunk)
        h = hashlib.sha256()
        total = 0
        elapsed = 0.0
        while True:
            t0 = time.perf_counter()
            conn.send_raw(req)
            line = conn.next_line()
            elapsed += time.perf_counter() - t0
            # Untimed: take the base64 out without a full JSON decode, hash it.
            text = bytes(line)
            i = text.find(self._B64)
            if i < 0:
                raise RuntimeError(f"{kind}: bad guest-file-read reply {text[:200]!r}")
            j = text.index(b'"', i + len(self._B64))
            data = binascii.a2b_base64(memoryview(text)[i + len(self._B64):j])
            rest = json.loads(text[:i] + b'"buf-b64": ""' + text[j + 1:])["return"]
            if rest["count"] != len(data):
                raise RuntimeError(f"{kind}: count {rest['count']} != {len(data)} decoded bytes")
            h.update(data)
            total += len(data)
            if rest["eof"] or not data:
                break
        conn.execute("guest-file-close", {"handle": handle})
        if total != self.p.file_size or h.hexdigest() != sha:
            raise RuntimeError(f"{kind}: file read returned {total} bytes, SHA-256 mismatch")
        return self.p.file_size / MiB / elapsed

    def file_read(self, name: str, chunk: int, ours: str = "ours") -> None:
        path, sha = self._data_file()
        rates = self.per_agent(name, lambda kind: self._read_once(kind, path, sha, chunk),
                               self.p.file_reps, ours)
        self._median_row(name, rates, chunk_bytes=chunk, file_bytes=self.p.file_size,
                         base64=self.agents[ours].base64_codec())

    def _write_once(self, kind: str, src: str, sha: str, chunk: int) -> float:
        conn = self.agents[kind].conn
        dest = self._zeroed_target(kind)
        handle = conn.execute("guest-file-open", {"path": dest, "mode": "r+"})
        elapsed = 0.0
        with open(src, "rb") as f:
            while True:
                data = f.read(chunk)
                if not data:
                    break
                req = b'{"execute":"guest-file-write","arguments":{"handle":%d,"buf-b64":"%s"}}\n' % (
                    handle, base64.b64encode(data))
                t0 = time.perf_counter()
                conn.send_raw(req)
                line = conn.next_line()
                elapsed += time.perf_counter() - t0
                rep = json.loads(bytes(line))
                if rep.get("return", {}).get("count") != len(data):
                    raise RuntimeError(f"{kind}: bad guest-file-write reply {bytes(line)[:200]!r}")
        t0 = time.perf_counter()
        conn.execute("guest-file-close", {"handle": handle})
        elapsed += time.perf_counter() - t0
        h = hashlib.sha256()
        with open(dest, "rb") as f:
            for block in iter(lambda: f.read(4 * MiB), b""):
                h.update(block)
        if h.hexdigest() != sha:
            raise RuntimeError(f"{kind}: written file SHA-256 mismatch")
        return self.p.file_size / MiB / elapsed

    def file_write(self, name: str, chunk: int, ours: str = "ours") -> None:
        path, sha = self._data_file()
        rates = self.per_agent(name, lambda kind: self._write_once(kind, path, sha, chunk),
                               self.p.file_reps, ours)
        self._median_row(name, rates, chunk_bytes=chunk, file_bytes=self.p.file_size,
                         base64=self.agents[ours].base64_codec(), written_to="a cached file of the same size, mode r+")

    # exec ------------------------------------------------------------------------
    def _exec_once(self, kind: str, args: Dict[str, Any], out_bytes: int) -> Tuple[float, int]:
        conn = self.agents[kind].conn
        req = json.dumps({"execute": "guest-exec", "arguments": args}).encode() + b"\n"
        t0 = time.perf_counter()
        conn.send_raw(req)
        rep = json.loads(bytes(conn.next_line()))
        if "error" in rep:
            raise RuntimeError(f"{kind}: guest-exec: {rep['error']}")
        status_req = b'{"execute":"guest-exec-status","arguments":{"pid":%d}}\n' % rep["return"]["pid"]
        polls = 0
        while True:
            conn.send_raw(status_req)
            line = bytes(conn.next_line())
            polls += 1
            if b'"exited": true' in line:
                break
            if b'"error"' in line[:20]:
                raise RuntimeError(f"{kind}: guest-exec-status: {bytes(line)[:200]!r}")
        elapsed = time.perf_counter() - t0
        status = json.loads(line)["return"]
        if status.get("exitcode") != 0:
            raise RuntimeError(f"{kind}: child failed: {str(status)[:200]}")
        if out_bytes:
            data = base64.b64decode(status.get("out-data", ""))
            if len(data) != out_bytes or hashlib.sha256(data).digest() != \
                    hashlib.sha256(bytes(out_bytes)).digest():
                raise RuntimeError(f"{kind}: captured {len(data)} bytes, expected {out_bytes} zero bytes")
        return elapsed * 1000, polls

    def exec_row(self, name: str, args: Dict[str, Any], out_bytes: int, reps: int) -> None:
        res = self.per_agent(name, lambda kind: self._exec_once(kind, args, out_bytes), reps)
        ms = {k: [t for t, _ in v] for k, v in res.items()}
        polls = {k: statistics.median([p for _, p in v]) if v else None for k, v in res.items()}
        self._median_row(name, ms, polls=polls, reps=reps)

    # inventory -------------------------------------------------------------------
    def inventory(self, name: str, command: str) -> None:
        req = b'{"execute":"%s"}\n' % command.encode()

        def once(kind: str) -> float:
            conn = self.agents[kind].conn
            t0 = time.perf_counter()
            conn.send_raw(req)
            line = conn.next_line()
            elapsed = time.perf_counter() - t0
            if not line[:10].tobytes().startswith(b'{"return"'):
                raise RuntimeError(f"{kind}: {command}: {bytes(line)[:200]!r}")
            return elapsed * 1000

        times = self.per_agent(name, once, self.p.inventory_reps)
        self._median_row(name, times, reps=self.p.inventory_reps, command=command)

    def _median_row(self, name: str, samples: Dict[str, List[float]], **extra: Any) -> None:
        row = self.results.setdefault(name, {})
        for kind in KINDS:
            row[kind] = statistics.median(samples[kind]) if samples[kind] else None
        row.update(extra)

    # memory ----------------------------------------------------------------------
    def rss_idle(self) -> None:
        # Idle: past qemu-ga-py's heap trim, which runs TRIM_DELAY after the last
        # traffic (guest-sync and guest-info at start); before it, start-up's
        # garbage is still mapped (about 21 MiB here).
        time.sleep(TRIM_DELAY + 0.5)
        mib = {k: proc_status(a.pid)["VmRSS"] / 1024 for k, a in self.agents.items()}
        self.record("rss_idle", mib["ours"], mib["ref"])

    def rss_peak(self, name: str = "rss_peak", ours: str = "ours") -> None:
        mib = {k: proc_status(a.pid)["VmHWM"] / 1024 for k, a in self.agents.items()}
        over = [r for r in self.wanted if r in self.results and r.endswith("_stdlib") == (ours == STDLIB)]
        self.record(name, mib[ours], mib["ref"], over=over)

    # driver ----------------------------------------------------------------------
    def run(self) -> None:
        self.run_row("startup", self.startup)
        for kind in KINDS:
            self.agents[kind] = Agent(kind, self.workdir)
        if any(r.endswith("_stdlib") for r in self.wanted):
            self.agents[STDLIB] = Agent(STDLIB, self.workdir)
        try:
            self.run_row("rss_idle", self.rss_idle)
            if {"ping_rtt_p50", "ping_rtt_p99", "cpu_per_ping"} & set(self.wanted):
                self.wanted += [r for r in ("ping_rtt_p50", "ping_rtt_p99", "cpu_per_ping")
                                if r not in self.wanted]
                self.run_row("ping_rtt_p50", self.ping_rtt)
            self.run_row("pipelined", self.pipelined)
            self.run_row("reconnect", self.reconnect)
            for short, command in INVENTORY:
                self.run_row(f"inventory_{short}", lambda s=short, c=command: self.inventory(f"inventory_{s}", c))
            self.run_row("exec_true", lambda: self.exec_row("exec_true", {"path": "/bin/true"}, 0,
                                                            self.p.exec_reps))
            self.run_row("exec_16m_stdout", lambda: self.exec_row(
                "exec_16m_stdout", {"path": "/usr/bin/head", "arg": ["-c", str(self.p.exec_out), "/dev/zero"],
                                    "capture-output": True}, self.p.exec_out, self.p.exec_out_reps))
            self.run_row("file_read_4m", lambda: self.file_read("file_read_4m", 4 * MiB))
            self.run_row("file_read_48m", lambda: self.file_read("file_read_48m", 48 * MiB))
            self.run_row("file_write_4m", lambda: self.file_write("file_write_4m", 4 * MiB))
            self.run_row("file_read_4m_stdlib", lambda: self.file_read("file_read_4m_stdlib", 4 * MiB, STDLIB))
            self.run_row("file_read_48m_stdlib", lambda: self.file_read("file_read_48m_stdlib", 48 * MiB, STDLIB))
            self.run_row("file_write_4m_stdlib", lambda: self.file_write("file_write_4m_stdlib", 4 * MiB, STDLIB))
            self.run_row("rss_peak", self.rss_peak)
            self.run_row("rss_peak_stdlib", lambda: self.rss_peak("rss_peak_stdlib", STDLIB))
        finally:
            for agent in self.agents.values():
                agent.stop()


# -- report ------------------------------------------------------------------------------

def finish_rows(results: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    rows = []
    for name, unit, better, target in ROWS:
        if name not in results:
            continue
        row: Dict[str, Any] = {"name": name, "unit": unit, "better": better, "target": target}
        row.update(results[name])
        ours, ref = row.get("ours"), row.get("ref")
        row["ratio"] = ours / ref if ours is not None and ref else None
        row["met"] = target_met(name, row)
        rows.append(row)
    return rows


def target_met(name: str, row: Dict[str, Any]) -> Optional[bool]:
    ours, ratio = row.get("ours"), row.get("ratio")
    if name == "startup":
        return None if ours is None else row["ratio_to_bare"] <= 2.0
    if name == "rss_idle":
        return None if ours is None else ours <= 20.0
    if ratio is None:
        return None
    found = re.search(r"([\d.]+)", row["target"])
    if found is None:   # a row that is measured only (the fallback rows)
        return None
    limit = float(found.group(1))
    return ratio >= limit if ">=" in row["target"] else ratio <= limit


def fmt(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows: List[Dict[str, Any]], markdown: bool = False) -> str:
    head = ["row", "unit", "qemu-ga-py", "qemu-ga", "ratio", "target", "met"]
    body = []
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "n/a"
        if r["name"] == "startup" and r.get("ratio_to_bare") is not None:
            ratio += f" ({r['ratio_to_bare']:.2f}x bare py {fmt(r['bare_python'])} ms)"
        met = {True: "yes", False: "NO", None: "-"}[r["met"]]
        if r.get("error"):
            met = "ERROR"
        body.append([r["name"], r["unit"], fmt(r.get("ours")), fmt(r.get("ref")), ratio, r["target"], met])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(b) + " |" for b in body]
    else:
        widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in [head] + body]
    notes = []
    for r in rows:
        for key in ("na_ours", "na_ref", "error"):
            if r.get(key):
                notes.append(f"{r['name']}: {r[key]}")
    return "\n".join(lines + ([""] + notes if notes else []))


def machine() -> Dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "python_executable": sys.executable,
            "machine": platform.machine()}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few iterations, small sizes (CI smoke)")
    ap.add_argument("--json", metavar="PATH",
                    help="write results here (default: benchmarks/results/latest.json, "
                         "quick.json with --quick, rows.json with --rows)")
    ap.add_argument("--rows", metavar="LIST", help="comma-separated subset of: " + ",".join(ROW_NAMES))
    ap.add_argument("--cpu", type=int, help="CPU to pin to (default: the last one allowed)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to a CPU")
    ap.add_argument("--markdown", action="store_true", help="print the table in Markdown")
    args = ap.parse_args(argv)
    if not os.access(REFERENCE, os.X_OK):
        print(f"{REFERENCE} is missing: install the qemu-guest-agent package", file=sys.stderr)
        return 2
    rows = ROW_NAMES[:] if not args.rows else [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = set(rows) - set(ROW_NAMES)
    if unknown:
        ap.error("unknown rows: " + ", ".join(sorted(unknown)))
    cpu = None
    if not args.no_pin:
        cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})  # children (both agents, their exec children) inherit it
    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the agents

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    ref_version = subprocess.run([REFERENCE, "-V"], capture_output=True, text=True).stdout.split("\n")[0]
    workdir = tempfile.mkdtemp(prefix="qga-bench-")
    global PYCACHE
    PYCACHE = os.path.join(workdir, "pycache")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "qga")],
                   env=agent_env(workdir), check=True, stdout=subprocess.DEVNULL)
    bench = Bench(Params(args.quick), workdir, rows)
    started = time.time()
    try:
        bench.run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result_rows = finish_rows(bench.results)
    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python3 benchmarks/run.py" + ("".join(f" {a}" for a in (argv or sys.argv[1:]))),
        "quick": args.quick,
        "pinned_cpu": cpu,
        "duration_s": round(time.time() - started, 1),
        "machine": machine(),
        "reference": ref_version.strip(),
        "rows": result_rows,
    }
    # A subset of rows never replaces the committed full results.
    default = "quick.json" if args.quick else "rows.json" if args.rows else "latest.json"
    out = args.json or str(RESULTS / default)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(table(result_rows, args.markdown))
    print(f"\n{doc['date']}  {doc['machine']['cpu']}  pinned to CPU {cpu}  -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
