"""Command line: qemu-ga's options, then qemu-ga-py's extensions.

Option processing follows qemu-ga 10.2: ``-c`` (or ``$QGA_CONF``) names the
config file, which is applied first; command-line options override it, and
the RPC lists accumulate.  Errors print a clear message and exit 1.
"""
from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Dict, List, NoReturn, Optional, Tuple

from qga.errors import InternalError
from qga import QEMU_VERSION, __version__
from qga.command import GROUPS
from qga.config import (DEFAULT_CONFIG_PATH, DEFAULT_FSFREEZE_HOOK, METHODS, Config, ConfigError,
                        apply, config_path, dump, load_file, validate)


if TYPE_CHECKING:
    import argparse


class CliError(InternalError):
    """A bad command line."""


def _csv(value: str) -> List[str]:
    return [item for item in value.split(",") if item]


#: The options, by group: the option strings and ``add_argument``'s keywords.
#: :func:`build_parser` declares them to argparse; :func:`_parse_plain` reads
#: the common forms itself.
_OPTIONS: Tuple[Tuple[str, Tuple[Tuple[Tuple[str, ...], Dict[str, Any]], ...]], ...] = (
    ("qemu-ga options", (
        (("-m", "--method"), {
            "metavar": "METHOD",
            "help": "transport method: one of " + ", ".join(METHODS) + " (default: virtio-serial)"}),
        (("-p", "--path"), {
            "metavar": "PATH",
            "help": "device/socket path (virtio-serial: /dev/virtio-ports/org.qemu.guest_agent.0, "
                    "isa-serial: /dev/ttyS0; unix-listen needs a path; vsock-listen takes CID:PORT)"}),
        (("-l", "--logfile"), {"metavar": "PATH", "help": "set logfile path (default: stderr or the journal)"}),
        (("-f", "--pidfile"), {"metavar": "PATH", "help": "specify pidfile (default: /var/run/qemu-ga.pid)"}),
        (("-F", "--fsfreeze-hook"), {
            "metavar": "PATH", "nargs": "?", "const": DEFAULT_FSFREEZE_HOOK,
            "help": f"enable fsfreeze hook; the optional argument must be attached "
                    f"(-F/path or --fsfreeze-hook=/path; default: {DEFAULT_FSFREEZE_HOOK})"}),
        (("-t", "--statedir"), {"metavar": "DIR", "help": "directory to store state files (default: /var/run)"}),
        (("-v", "--verbose"), {"action": "store_true", "help": "log extra debugging information"}),
        (("-V", "--version"), {"action": "store_true", "help": "print version information and exit"}),
        (("-d", "--daemonize"), {"action": "store_true", "help": "become a daemon"}),
        (("-b", "--block-rpcs"), {
            "metavar": "LIST", "action": "append", "type": _csv,
            "help": 'comma-separated list of RPCs to disable (no spaces, use "help" to list)'}),
        (("-a", "--allow-rpcs"), {
            "metavar": "LIST", "action": "append", "type": _csv,
            "help": 'comma-separated list of RPCs to enable, all others disabled (use "help" to list)'}),
        (("-D", "--dump-conf"), {"action": "store_true", "help": "dump the effective configuration and exit"}),
        (("-c", "--config"), {
            "metavar": "PATH", "help": f"configuration file (default: $QGA_CONF or {DEFAULT_CONFIG_PATH})"}),
        (("-r", "--retry-path"), {
            "action": "store_true", "help": "attempt to re-open the channel path if it fails or disappears"}),
        (("-h", "--help"), {"action": "store_true", "help": "display this help and exit"}),
    )),
    ("qemu-ga-py extensions (also config keys of the same name)", (
        (("--block-groups",), {
            "metavar": "LIST", "action": "append", "type": _csv,
            "help": "comma-separated command groups to disable: " + ", ".join(g for g in GROUPS if g != "protocol")}),
        (("--self-test",), {
            "action": "store_true",
            "help": "check the channel, state directory, freezable mounts, SELinux and the "
                    "command policy without changing anything; exit 1 if something is wrong"}),
        (("--fsfreeze-timeout",), {
            "metavar": "SECS", "type": float,
            "help": "thaw automatically when filesystems stay frozen this long, counted from the freeze "
                    "even across an agent restart; 0 never thaws (default: 600)"}),
        (("--fsfreeze-hook-timeout",), {
            "metavar": "SECS", "type": float,
            "help": "kill the fsfreeze hook after this long; 0 waits forever like qemu-ga (default: 300)"}),
        (("--fsfreeze-exclude",), {
            "metavar": "LIST", "action": "append", "type": _csv,
            "help": "comma-separated mounts guest-fsfreeze-freeze leaves alone: entries starting "
                    "with / are mount-point globs, others filesystem types (e.g. /mnt/scratch*,xfs); "
                    "guest-fsfreeze-freeze-list still freezes what the host names"}),
        (("--statvfs-timeout",), {
            "metavar": "SECS", "type": float,
            "help": "how long guest-get-fsinfo waits for one filesystem's statvfs (default: 2)"}),
        (("--frozen-sigterm",), {
            "metavar": "ACTION", "choices": ("thaw", "ignore"),
            "help": "SIGTERM while frozen: thaw, then exit (default), or ignore it (qemu-ga)"}),
        (("--command-timeout",), {
            "metavar": "SECS", "type": float,
            "help": "deadline for a command before the host gets an error (default: 60)"}),
        (("--interface-exclude",), {
            "metavar": "GLOBS", "action": "append", "type": _csv,
            "help": "comma-separated interface name patterns hidden from guest-network-get-interfaces"}),
        (("--file-nofollow",), {
            "action": "store_true",
            "help": "guest-file-open does not follow a symlink as the last path component"}),
        (("--max-file-handles",), {"metavar": "N", "type": int, "help": "open guest-file handles (default: 1024)"}),
        (("--max-exec-records",), {
            "metavar": "N", "type": int, "help": "finished guest-exec results kept until queried (default: 1024)"}),
        (("--max-concurrent-execs",), {
            "metavar": "N", "type": int, "help": "guest-exec children running at once (default: 128)"}),
        (("--extension-commands",), {
            "action": "store_true",
            "help": "register qemu-ga-py's own x- commands (x-guest-exec-kill); off by default, "
                    "so guest-info lists exactly qemu-ga's commands"}),
    )),
)


def build_parser() -> argparse.ArgumentParser:
    """The options, shared by ``--help`` and the qemu-ga-py(8) man page."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise CliError(message)

    p = _Parser(prog="qemu-ga-py", add_help=False, argument_default=argparse.SUPPRESS,
                description="QEMU Guest Agent (Python implementation), compatible with "
                            f"qemu-ga {QEMU_VERSION}.")
    for title, options in _OPTIONS:
        group = p.add_argument_group(title)
        for flags, keywords in options:
            group.add_argument(*flags, **keywords)
    return p


#: Option string -> (argparse destination, keywords), for the options
#: :func:`_parse_plain` reads (all but ``-F``, whose argument is optional).
_PLAIN = {flag: (next(f for f in flags if f.startswith("--"))[2:].replace("-", "_"), keywords)
          for _title, options in _OPTIONS for flags, keywords in options if "nargs" not in keywords
          for flag in flags}


def _parse_plain(argv: List[str]) -> Optional[SimpleNamespace]:
    """The namespace argparse makes of a command line of whole option words,
    each value a word of its own; None for anything else.

    Start-up skips argparse (and the gettext and locale look-ups it makes)
    for the usual command lines; argparse parses, and reports errors in, the
    others (attached or abbreviated forms, values starting with ``-``).
    """
    ns = SimpleNamespace()
    args = iter(argv)
    for arg in args:
        if arg not in _PLAIN:
            return None
        dest, keywords = _PLAIN[arg]
        action = keywords.get("action")
        if action == "store_true":
            setattr(ns, dest, True)
            continue
        value = next(args, "-")  # a missing value is argparse's to report
        if value.startswith("-") or value not in keywords.get("choices", (value,)):
            return None
        try:
            converted = keywords.get("type", str)(value)
        except ValueError:
            return None
        if action == "append":
            setattr(ns, dest, getattr(ns, dest, []) + [converted])
        else:
            setattr(ns, dest, converted)
    return ns


#: argparse destination -> config-file key, for options that map one to one.
_CLI_KEYS = {
    "method": "method", "path": "path", "logfile": "logfile", "pidfile": "pidfile",
    "fsfreeze_hook": "fsfreeze-hook", "statedir": "statedir", "verbose": "verbose",
    "daemonize": "daemon", "retry_path": "retry-path", "block_rpcs": "block-rpcs",
    "allow_rpcs": "allow-rpcs", "block_groups": "block-groups",
    "fsfreeze_timeout": "fsfreeze-timeout", "frozen_sigterm": "frozen-sigterm",
    "fsfreeze_hook_timeout": "fsfreeze-hook-timeout", "fsfreeze_exclude": "fsfreeze-exclude",
    "statvfs_timeout": "statvfs-timeout",
    "command_timeout": "command-timeout", "interface_exclude": "interface-exclude",
    "file_nofollow": "file-nofollow", "max_file_handles": "max-file-handles",
    "max_exec_records": "max-exec-records", "max_concurrent_execs": "max-concurrent-execs",
    "extension_commands": "extension-commands",
}


def build_config(ns: object) -> Config:
    """Defaults, then the config file, then the command line."""
    config = Config()
    path, explicit = config_path(getattr(ns, "config", None))
    load_file(config, path, explicit)
    for dest, key in _CLI_KEYS.items():
        if hasattr(ns, dest):
            value: Any = getattr(ns, dest)
            if isinstance(value, list):  # one comma list per occurrence of the option
                for chunk in value:
                    apply(config, key, chunk)
            else:
                apply(config, key, value)
    return config


def _print_command_names(config: Config) -> None:
    from qga.commands import load
    from qga.registry import Registry

    print("\n".join(Registry(load(), extensions=config.extension_commands).names()))


def policy_comment(config: Config) -> str:
    """``-D``'s trailer: the commands disabled by the groups, as comments (never read back).

    Only ``block-groups`` (which qemu-ga does not know) makes the effective
    policy differ from what qemu-ga's own keys say, so a configuration
    without it gets no comment and ``-D`` prints what qemu-ga prints.
    """
    if not config.block_groups:
        return ""
    from qga.commands import load
    from qga.registry import Registry

    disabled = Registry.from_config(config, load()).policy_disabled()
    return ("# effective command policy (allow-rpcs, block-rpcs, block-groups); informational\n"
            f"# disabled-commands={';'.join(disabled)}\n")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``qemu-ga-py``."""
    args = sys.argv[1:] if argv is None else argv
    ns: object = _parse_plain(args)
    if ns is None:
        try:
            ns = build_parser().parse_args(args)
        except CliError as exc:
            message = str(exc)
            if message.startswith("unrecognized arguments: "):  # getopt's wording, as qemu-ga prints it
                message = "unrecognized option '" + message.split(": ", 1)[1] + "'"
            print(f"qemu-ga-py: {message}\nUnknown option, try 'qemu-ga-py --help' for more information.",
                  file=sys.stderr)
            return 1
    if getattr(ns, "help", False):
        build_parser().print_help()
        return 0
    if getattr(ns, "version", False):
        print(f"QEMU Guest Agent {QEMU_VERSION} (qemu-ga-py {__version__})")
        return 0
    try:
        config = build_config(ns)
        if "help" in config.block_rpcs or "help" in (config.allow_rpcs or []):
            _print_command_names(config)
            return 0
        validate(config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if getattr(ns, "dump_conf", False):
        sys.stdout.write(dump(config) + policy_comment(config))
        return 0
    if getattr(ns, "self_test", False):
        from qga.selftest import run_self_test

        return run_self_test(config)
    from qga.agent import Agent
    from qga.log import LogSetup

    try:
        logs = LogSetup(config.logfile, config.verbose)
    except OSError as exc:
        print(f"unable to open specified log file: {exc.strerror}", file=sys.stderr)
        return 1
    return Agent(config, logs).run()
