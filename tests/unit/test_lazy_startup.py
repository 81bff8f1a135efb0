"""Nothing heavy before the first reply (issue 15, item 5: start-up time).

The agent answers its first guest-sync without importing the modules of the
other commands; a command's module is imported when it is first called;
guest-info and names the index cannot place take every module.  The index that
maps names to modules is generated from the declarations and must be current.
The lexer's fast-path regex is compiled after the first reply.  Neither
argparse, dataclasses nor socket is imported on the way to it.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

import qga.commands
from qga.codec.lazyre import LazyPattern
from qga.commands import Catalog, index_source
from qga.errors import CommandNotFound
from qga.registry import Registry
from tests.qemu_schema import LINUX_NAMES

REPO = Path(__file__).resolve().parents[2]

# Runs a real agent (qga.cli.main, as ``python3 -m qga`` does) in a fresh
# interpreter and records which command modules are loaded after each request.
_SCRIPT = r"""
import _socket, json, os, shutil, signal, sys, tempfile, threading, time  # _socket: see "heavy"
import qga.cli
import qga.codec.lexer as lexer

exact = []  # messages the lexer's exact path parsed (the others took the fast-path regex)
_parse_tokens = lexer.parse_tokens
def counting_parse_tokens(types, texts):
    exact.append(1)
    return _parse_tokens(types, texts)
lexer.parse_tokens = counting_parse_tokens

tmp = tempfile.mkdtemp()
sock_path = os.path.join(tmp, "sock")
conf = os.path.join(tmp, "qga.conf")
with open(conf, "w") as f:
    f.write("[general]\n")
os.environ["QGA_CONF"] = conf
seen = {}

def loaded():
    return sorted(m for m in sys.modules if m.startswith(("qga.commands.", "qga.linux.")))

def client():
    try:
        for _ in range(3000):
            try:
                s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                s.connect(sock_path)
                break
            except OSError:
                s.close()
                time.sleep(0.01)
        pending = b""
        for name, args in [("guest-sync", {"id": 7}), ("guest-get-host-name", {}),
                           ("guest-no-such-command", {}), ("guest-info", {})]:
            s.sendall(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
            while b"\n" not in pending:
                chunk = s.recv(65536)
                if not chunk:
                    raise EOFError("the agent closed the connection")
                pending += chunk
            line, pending = pending.split(b"\n", 1)
            seen[name] = {"reply": json.loads(line), "loaded": loaded(), "exact": len(exact),
                          "logging": "logging" in sys.modules,
                          "heavy": sorted({"argparse", "dataclasses", "gettext", "locale", "socket"} & set(sys.modules))}
    finally:
        os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=client, daemon=True).start()
status = qga.cli.main(["-m", "unix-listen", "-p", sock_path, "-t", tmp] + sys.argv[1:])
shutil.rmtree(tmp)
print(json.dumps({"status": status, "seen": seen}))
"""


def _run_agent(*options: str) -> Dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, *options], capture_output=True, text=True,
                         cwd=REPO, timeout=60, check=True)
    result: Dict[str, Any] = json.loads(out.stdout)
    assert result["status"] == 0, out.stderr
    return result["seen"]


def test_first_sync_is_answered_before_any_other_command_module_is_imported() -> None:
    seen = _run_agent()
    first = seen["guest-sync"]
    assert first["reply"] == {"return": 7}
    # core declares the protocol commands; the others wait, the freeze module's start hook too.
    assert {m for m in first["loaded"] if m.startswith("qga.commands.")} == {"qga.commands._index", "qga.commands.core"}
    assert not {"qga.linux.blockdev", "qga.linux.netif", "qga.linux.mounts"} & set(first["loaded"])
    assert not first["logging"]  # a quiet start writes no record: logging is not even imported
    # The usual command line is read without argparse (its gettext and locale look-ups),
    # Config is no dataclass (dataclasses imports inspect, ast, dis and tokenize), and the
    # listening socket is a _socket one (socket builds enums and imports selectors).
    assert first["heavy"] == []


def test_the_start_path_leaves_out_logging_json_and_the_command_modules() -> None:
    code = ("import sys, qga.cli, qga.agent; "
            "print(sorted(m for m in sys.modules if m in ('logging', 'json', 'qga.logformat') "
            "or m.startswith(('qga.commands.', 'qga.linux.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=60, check=True)
    assert out.stdout.strip() == "['qga.commands._index']"


def test_a_command_module_is_imported_on_its_first_call() -> None:
    seen = _run_agent()
    call = seen["guest-get-host-name"]
    assert set(call["reply"]["return"]) == {"host-name"}
    assert "qga.commands.system" in call["loaded"]
    assert "qga.commands.system" not in seen["guest-sync"]["loaded"]
    assert "qga.commands.storage" not in call["loaded"]


def test_unknown_names_and_guest_info_take_every_module() -> None:
    seen = _run_agent()
    assert seen["guest-no-such-command"]["reply"] == {
        "error": {"class": "CommandNotFound", "desc": "The command guest-no-such-command has not been found"}}
    info = seen["guest-info"]
    assert [c["name"] for c in info["reply"]["return"]["supported_commands"]] == LINUX_NAMES[::-1]
    modules = {f"qga.commands.{m}" for m in qga.commands.COMMANDS.values()}
    assert modules <= set(seen["guest-no-such-command"]["loaded"])


def test_the_fast_path_regex_is_compiled_after_the_first_reply() -> None:
    """Compiling it would be a fifth of the start-up: the first message takes the exact path,
    and the fast path is ready for the next ones."""
    seen = _run_agent()
    assert seen["guest-sync"]["exact"] == 1
    assert seen["guest-info"]["exact"] == 1


def test_frozen_mode_is_entered_with_every_command_module_imported() -> None:
    """While frozen, an import could block writing its bytecode cache on a frozen filesystem."""
    code = ("import json, sys; from qga.commands import Catalog; from qga.registry import Registry; "
            "r = Registry(Catalog()); r.lookup('guest-ping'); before = sorted(sys.modules); r.frozen = True; "
            "print(json.dumps([before, sorted(sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=60, check=True)
    before, frozen = json.loads(out.stdout)
    modules = {f"qga.commands.{m}" for m in qga.commands.COMMANDS.values()}
    assert "qga.commands.storage" not in before
    assert modules <= set(frozen)


def test_records_are_written_as_before_once_logging_is_needed(tmp_path: Path) -> None:
    """-v: the first record imports logging and installs the -l file's handler, qemu-ga's format."""
    logfile = tmp_path / "agent.log"
    seen = _run_agent("-v", "-l", str(logfile))
    assert seen["guest-sync"]["logging"]
    lines = logfile.read_text().splitlines()
    assert re.fullmatch(r"\d+\.\d{6}: debug: running guest-sync", lines[0]), lines
    assert any(line.endswith(": debug: running guest-info") for line in lines), lines


def test_closing_the_log_gate_imports_logging_first() -> None:
    """Nothing may be imported while frozen (bytecode cache writes could block)."""
    code = ("import sys; from qga.log import LogSetup; s = LogSetup(None, False); "
            "a = 'logging' in sys.modules; s.gate.set_frozen(True); print(a, 'qga.logformat' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=60, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_a_modules_start_hooks_run_for_the_agent_when_it_is_imported(tmp_path: Path) -> None:
    """The freeze module's hook (thaw on the way out) is in place before any of its commands runs."""
    code = ("import sys; from qga.commands import Catalog; from qga.config import Config; "
            "from qga.context import Context; from qga.loop import Loop; from qga.registry import Registry; "
            "from qga.state import StateDir; catalog = Catalog(); registry = Registry(catalog); "
            "ctx = Context(Config(), StateDir(sys.argv[1]), Loop(), registry); catalog.bind(ctx); "
            "a = len(ctx._shutdown_hooks); registry.lookup('guest-fsfreeze-status'); "
            "b = len(ctx._shutdown_hooks); registry.names(); print(a, b, len(ctx._shutdown_hooks))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         cwd=REPO, timeout=60, check=True)
    assert out.stdout.split() == ["0", "1", "1"]


def test_extension_commands_are_found_lazily_only_when_enabled() -> None:
    assert "x-guest-exec-kill" not in Registry(Catalog()).names()
    with pytest.raises(CommandNotFound, match="has not been found"):
        Registry(Catalog()).lookup("x-guest-exec-kill")
    assert Registry(Catalog(), extensions=True).lookup("x-guest-exec-kill").name == "x-guest-exec-kill"


def test_the_committed_index_matches_the_declarations() -> None:
    committed = (REPO / "qga" / "commands" / "_index.py").read_text()
    assert committed == index_source(), \
        "qga/commands/_index.py is stale: regenerate it with `python3 -m qga.commands` and commit it"


@pytest.mark.parametrize("index", [{}, {"guest-ping": "system", "guest-sync": "nowhere"}],
                         ids=["names-missing", "wrong-modules"])
def test_a_stale_index_changes_nothing_the_agent_answers(monkeypatch: pytest.MonkeyPatch,
                                                         index: Dict[str, str]) -> None:
    """The index only saves imports: a name it lacks or misplaces is found among every declaration."""
    monkeypatch.setattr(qga.commands, "COMMANDS", index)
    registry = Registry(Catalog())
    assert registry.lookup("guest-ping").name == "guest-ping"
    assert registry.lookup("guest-sync").name == "guest-sync"
    assert registry.names() == LINUX_NAMES


def test_a_deferred_pattern_matches_nothing_until_compiled() -> None:
    lazy = LazyPattern(rb"a+")
    assert lazy.match(b"xaa", 1, 3).group() == b"aa"  # type: ignore[union-attr]  # compiled on first use
    deferred = LazyPattern(rb"a+")
    deferred.defer()
    assert deferred.match(b"aa", 0, 2) is None
    deferred.compile()
    assert deferred.match(b"aa", 0, 2).group() == b"aa"  # type: ignore[union-attr]
    deferred.defer()  # too late: it stays compiled
    assert deferred.match(b"aa", 0, 2) is not None
