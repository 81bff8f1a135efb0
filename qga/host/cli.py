"""``qga-client``: the command line around :class:`qga.host.client.AgentClient`.

Each subcommand is one short exchange with the agent; every wait is bounded.
Exit status: 0 success, 1 the agent returned an error, 2 usage, 3 agent
unreachable or no reply in time; ``exec`` exits with the guest command's status.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import Any, List, Optional, Sequence

from qga.host.client import (DEFAULT_TIMEOUT, AgentClient, AgentDisconnected, AgentError, AgentTimeout,
                        ClientError, parse_object)

EXIT_OK = 0
EXIT_AGENT_ERROR = 1  # the agent answered with an error object
# 2: a usage error (argparse exits with it by itself)
EXIT_UNREACHABLE = 3  # cannot connect, no answer in time, or disconnected
EXIT_EXEC_TIMEOUT = 124  # as timeout(1): the guest command is still running


def build_parser() -> argparse.ArgumentParser:
    """The ``qga-client`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="qga-client",
        description="Talk to a QEMU guest agent (qemu-ga or qemu-ga-py) through the host-side "
                    "UNIX socket of its channel.",
        epilog="Exit status: 0 success, 1 the agent returned an error, 2 usage, "
               "3 agent unreachable or no reply in time; exec exits with the guest "
               "command's status (128+N if killed by signal N, 124 if --timeout hit).",
    )
    parser.add_argument("-s", "--socket", default=os.environ.get("QGA_SOCKET"),
                        help="host-side UNIX socket of the agent channel (default: $QGA_SOCKET)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECS",
                        help="maximum wait for each reply, including the handshake (default: %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="print results as JSON instead of plain text")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("ping", help="guest-ping: check the agent answers")
    sub.add_parser("info", help="guest-info: version and supported commands")
    sub.add_parser("osinfo", help="guest-get-osinfo")
    fs = sub.add_parser("fsfreeze", help="guest-fsfreeze-freeze/-thaw/-status")
    fs.add_argument("action", choices=["freeze", "thaw", "status"])
    ex = sub.add_parser("exec", help="run a command in the guest and print its output",
                        usage="qga-client exec [--timeout SECS] -- CMD [ARG ...]")
    ex.add_argument("--timeout", dest="exec_timeout", type=float, default=60.0, metavar="SECS",
                    help="give up waiting for the command after SECS (0: wait forever; "
                         "default: %(default)s); the command keeps running in the guest")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD")
    cat = sub.add_parser("cat", help="print a guest file to stdout")
    cat.add_argument("path")
    put = sub.add_parser("put", help="copy a local file into the guest ('-' reads stdin)")
    put.add_argument("local")
    put.add_argument("remote")
    sd = sub.add_parser("shutdown", help="guest-shutdown (no reply is expected on success)")
    sd.add_argument("--mode", choices=["powerdown", "halt", "reboot"], default="powerdown",
                    help="default: %(default)s; success is silence, so only errors are reported")
    raw = sub.add_parser("raw", help="send a JSON request verbatim and print the reply line")
    raw.add_argument("request", help="e.g. '{\"execute\":\"guest-ping\"}'")
    return parser


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _run_command(agent: AgentClient, opts: argparse.Namespace) -> int:
    cmd = opts.command
    if cmd == "ping":
        agent.execute("guest-ping")
        if opts.json:
            _print_json({})
        return EXIT_OK
    if cmd == "info":
        info = agent.execute("guest-info")
        if opts.json:
            _print_json(info)
            return EXIT_OK
        print(f"version: {info.get('version')}")
        for entry in sorted(info.get("supported_commands", []), key=lambda e: e.get("name", "")):
            flags: List[str] = []
            if not entry.get("enabled", True):
                flags.append("disabled")
            if not entry.get("success-response", True):
                flags.append("no-reply")
            print(entry.get("name") + (f" ({', '.join(flags)})" if flags else ""))
        return EXIT_OK
    if cmd == "osinfo":
        osinfo = agent.execute("guest-get-osinfo")
        if opts.json:
            _print_json(osinfo)
        else:
            for key in sorted(osinfo):
                print(f"{key}: {osinfo[key]}")
        return EXIT_OK
    if cmd == "fsfreeze":
        name = {"freeze": "guest-fsfreeze-freeze", "thaw": "guest-fsfreeze-thaw",
                "status": "guest-fsfreeze-status"}[opts.action]
        result = agent.execute(name)
        if opts.json:
            _print_json(result)
        else:
            print(result)
        return EXIT_OK
    if cmd == "exec":
        argv = opts.argv
        wait = opts.exec_timeout if opts.exec_timeout and opts.exec_timeout > 0 else None
        try:
            status = agent.run(argv, wait=wait)
        except AgentTimeout as exc:
            print(f"qga-client: exec: {exc}", file=sys.stderr)
            return EXIT_EXEC_TIMEOUT
        if opts.json:
            _print_json(status)
        else:
            sys.stdout.flush()
            sys.stdout.buffer.write(base64.b64decode(status.get("out-data", "")))
            sys.stdout.buffer.flush()
            sys.stderr.buffer.write(base64.b64decode(status.get("err-data", "")))
            sys.stderr.buffer.flush()
        for stream in ("out", "err"):
            if status.get(f"{stream}-truncated"):
                print(f"qga-client: exec: std{stream} was truncated by the agent", file=sys.stderr)
        if "signal" in status:
            return 128 + int(status["signal"])
        return int(status.get("exitcode", 0)) & 0xFF
    if cmd == "cat":
        sys.stdout.flush()
        agent.read_file(opts.path, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return EXIT_OK
    if cmd == "put":
        if opts.local == "-":
            agent.write_file(sys.stdin.buffer, opts.remote)
        else:
            with open(opts.local, "rb") as src:
                agent.write_file(src, opts.remote)
        return EXIT_OK
    if cmd == "shutdown":
        agent.execute_no_reply("guest-shutdown", {"mode": opts.mode}, wait=min(2.0, opts.timeout))
        return EXIT_OK
    if cmd == "raw":
        line = agent.raw(opts.request)
        sys.stdout.write(line.decode("utf-8", "replace") + "\n")
        reply = parse_object(line)
        return EXIT_AGENT_ERROR if reply is None or "error" in reply else EXIT_OK
    raise AssertionError(cmd)  # argparse restricts the choices


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``qga-client``; returns the exit status."""
    parser = build_parser()
    opts = parser.parse_args(argv)
    if not opts.socket:
        parser.error("no socket given: use -s/--socket PATH or set $QGA_SOCKET")
    if opts.timeout <= 0:
        parser.error("--timeout must be positive")
    if opts.command == "exec":
        # argparse.REMAINDER keeps a leading "--" (version-dependent): drop it.
        if opts.argv and opts.argv[0] == "--":
            opts.argv = opts.argv[1:]
        if not opts.argv:
            parser.error("exec: missing command (use: exec [--timeout SECS] -- CMD [ARG ...])")
    agent = AgentClient(opts.socket, timeout=opts.timeout)
    try:
        with agent:
            return _run_command(agent, opts)
    except AgentError as exc:
        print(f"qga-client: error: {exc.desc} ({exc.cls})", file=sys.stderr)
        return EXIT_AGENT_ERROR
    except (AgentTimeout, AgentDisconnected) as exc:
        print(f"qga-client: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ClientError as exc:
        print(f"qga-client: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except BrokenPipeError:
        # `qga-client info | head`: stop quietly, as coreutils do; point
        # stdout at /dev/null so the interpreter's final flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # 128 + SIGPIPE
    except OSError as exc:  # local files for put, ...
        print(f"qga-client: {exc}", file=sys.stderr)
        return EXIT_AGENT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
