"""Render a roff man page from an ``argparse`` parser.

The ``qemu-ga-py(8)`` page is generated from :func:`qga.cli.build_parser`,
the same object that prints ``--help``, so the two cannot drift apart; the
same goes for ``qga-client(1)`` and :func:`qga.host.cli.build_parser`.  The
RPM build runs ``python3 -m qga.host.manpage -o qemu-ga-py.8`` and
``python3 -m qga.host.manpage --page qga-client -o qga-client.1``.

Only prose that has no place in ``--help`` (configuration file, signals,
files, exit status) is kept here, as static sections.

Why not argparse-manpage (PyPI, packaged by Fedora): version 4.8 renders an
option with an optional argument as ``-F [PATH], --fsfreeze-hook [PATH]``,
a separate word, but qemu-ga's optional arguments must be attached
(``-F/path``, ``--fsfreeze-hook=/path``), as written here
(``-F[PATH], --fsfreeze-hook[=PATH]``); the static sections would move to an
``--include`` file in its own format; and Debian 12 packages only 1.2.2, so
the RPM smoke build, which downloads nothing, would need a newer one besides.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
from typing import Iterable, List, Optional, Sequence, Tuple

__all__ = ["render", "main", "EXTRA_SECTIONS", "CLIENT_SECTIONS"]


def _esc(text: str) -> str:
    """Escape text for roff: backslashes, and hyphens so they print as ASCII
    minus signs (needed for copy-pasted options), plus line-leading control
    characters."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for line in text.split("\n"):
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def _para(text: str) -> str:
    """A paragraph: argparse help reflows whitespace, so do the same."""
    return _esc(re.sub(r"\s+", " ", text).strip())


def _expand_help(action: argparse.Action, prog: str) -> str:
    """``action.help`` with ``%(default)s``-style placeholders filled in,
    as argparse's HelpFormatter does (its method for it is private)."""
    assert action.help is not None
    params = dict(vars(action), prog=prog)
    for name in list(params):
        if params[name] is argparse.SUPPRESS:
            del params[name]
    for name in list(params):
        if hasattr(params[name], "__name__"):
            params[name] = params[name].__name__
    if params.get("choices") is not None:
        params["choices"] = ", ".join(str(c) for c in params["choices"])
    try:
        return action.help % params
    except (KeyError, TypeError, ValueError):
        return action.help


def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        mv = action.metavar
        return " ".join(mv) if isinstance(mv, tuple) else str(mv)
    if action.choices is not None:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return action.dest.upper()


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def _option_term(action: argparse.Action) -> str:
    """The ``.TP`` term: ``\\fB\\-F\\fR[\\fIPATH\\fR], \\fB\\-\\-fsfreeze\\-hook\\fR[=\\fIPATH\\fR]``."""
    if not action.option_strings:
        return "\\fI" + _esc(_metavar(action)) + "\\fR"
    parts: List[str] = []
    mv = "\\fI" + _esc(_metavar(action)) + "\\fR"
    for opt in action.option_strings:
        term = "\\fB" + _esc(opt) + "\\fR"
        if _takes_value(action):
            long_opt = opt.startswith("--")
            if action.nargs == argparse.OPTIONAL:
                # An optional argument must be attached: -F/path, --hook=/path.
                term += "[" + ("=" if long_opt else "") + mv + "]"
            elif action.nargs in (argparse.ZERO_OR_MORE, argparse.ONE_OR_MORE):
                term += " " + mv + " ..."
            else:
                term += ("=" if long_opt else " ") + mv
        parts.append(term)
    return ", ".join(parts)


def _synopsis(parser: argparse.ArgumentParser) -> str:
    """``qemu-ga-py [OPTION]...`` plus positionals (if any)."""
    out = "\\fB" + _esc(parser.prog) + "\\fR"
    if any(a.option_strings for a in parser._actions):
        out += " [\\fIOPTION\\fR]..."
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out += " \\fI" + _esc(_metavar(action) if action.metavar else "COMMAND") + "\\fR [\\fIARG\\fR]..."
        elif not action.option_strings and action.help is not argparse.SUPPRESS:
            out += " \\fI" + _esc(_metavar(action)) + "\\fR"
    return out


def _commands(parser: argparse.ArgumentParser, prog: str) -> List[str]:
    """A COMMANDS section for sub-commands (qga-client), empty if none."""
    out: List[str] = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help for a in action._choices_actions}
        for name, sub in action.choices.items():
            term = "\\fB" + _esc(name) + "\\fR"
            for a in sub._actions:
                if a.help is argparse.SUPPRESS or isinstance(a, argparse._HelpAction):
                    continue
                if a.option_strings:
                    term += " [" + _option_term(a) + "]"
                else:
                    mv = _esc(_metavar(a))
                    if a.nargs == argparse.REMAINDER:
                        term += " [\\fB\\-\\-\\fR] \\fI" + mv + "\\fR [\\fIARG\\fR]..."
                    else:
                        term += " \\fI" + mv + "\\fR"
            out += [".TP", term]
            if helps.get(name):
                out.append(_para(str(helps[name])))
            described = [a for a in sub._actions
                         if a.help and a.help is not argparse.SUPPRESS
                         and not isinstance(a, argparse._HelpAction)]
            if described:
                out.append(".RS")
                for a in described:
                    out += [".TP", _option_term(a), _para(_expand_help(a, prog))]
                out.append(".RE")
    if out:
        out.insert(0, ".SH COMMANDS")
    return out


def _groups(parser: argparse.ArgumentParser) -> Iterable[Tuple[str, Optional[str], List[argparse.Action]]]:
    """(title, description, actions) per argument group, in --help order."""
    for group in parser._action_groups:
        actions = [a for a in group._group_actions
                   if a.help is not argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)]
        if actions:
            yield group.title or "options", group.description, actions


#: Static prose for qemu-ga-py(8): (section title, roff body).  Bodies are
#: raw roff (already escaped) so they can use formatting.
EXTRA_SECTIONS: Sequence[Tuple[str, str]] = (
    ("CONFIGURATION FILE", r"""
Options can also be set in a key file, by default
\fI/etc/qemu/qemu\-ga.conf\fR (or \fB$QGA_CONF\fR, or \fB\-c\fR \fIPATH\fR),
group \fB[general]\fR.
Keys are the long option names: \fBdaemon\fR, \fBmethod\fR, \fBpath\fR,
\fBlogfile\fR, \fBpidfile\fR, \fBfsfreeze\-hook\fR, \fBstatedir\fR,
\fBverbose\fR, \fBretry\-path\fR, \fBblock\-rpcs\fR, \fBallow\-rpcs\fR.
Command line options override the file; the lists accumulate.
\fB\-D\fR prints the effective configuration in this format.
"""),
    ("SYSTEMD", r"""
Under systemd the agent is started by \fIqemu\-ga\-py.service\fR when udev
sees the virtio\-serial port \fIorg.qemu.guest_agent.0\fR; the unit is bound
to the port's device unit and stops when the port disappears.  Extra
arguments go into \fBQGA_ARGS\fR in \fI/etc/sysconfig/qemu\-ga\-py\fR.
The agent reports readiness and state through \fBsd_notify\fR(3) and feeds
the service watchdog.
"""),
    ("FILES", r"""
.TP
.I /etc/qemu/qemu\-ga.conf
Configuration file.
.TP
.I /etc/sysconfig/qemu\-ga\-py
Environment file of the systemd unit (\fBQGA_ARGS\fR).
.TP
.I /etc/qemu/fsfreeze\-hook
Default fsfreeze hook (enabled with \fB\-F\fR); it runs the executables in
.IR /etc/qemu/fsfreeze\-hook.d/ .
.TP
.I STATEDIR/qga.state
Persistent state (file handle counter).
.TP
.I STATEDIR/qga.state.isfrozen
Present (empty, as qemu\-ga makes it) while file systems are frozen; a
restarted agent comes up frozen.
.TP
.I STATEDIR/qga.state.isfrozen.since
When the freeze began (boot id and \fBCLOCK_BOOTTIME\fR): a restarted agent
thaws when the original \fB\-\-fsfreeze\-timeout\fR runs out, or at once
after a reboot.
"""),
    ("ENVIRONMENT", r"""
.TP
.B QGA_CONF
Configuration file path, if \fB\-c\fR is not given.
.TP
.B NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID
Set by systemd for readiness and watchdog notifications.
.TP
.B LISTEN_FDS, LISTEN_PID
systemd socket activation (one socket).
"""),
    ("SECURITY", r"""
\fBguest\-file\-*\fR and \fBguest\-exec\fR give whoever controls the host
side of the channel unrestricted access to the guest as root.  Use
\fB\-\-allow\-rpcs\fR to expose only what the host needs.
"""),
    ("EXIT STATUS", r"""
0 on a normal stop (signal, or end of the channel without \fB\-r\fR);
1 on configuration or channel errors.
"""),
    ("SEE ALSO", r"""
\fBqga\-client\fR(1), \fBqemu\-ga\fR(8), \fBsystemd.service\fR(5), \fBsd_notify\fR(3)
"""),
)


#: Static prose for qga-client(1).
CLIENT_SECTIONS: Sequence[Tuple[str, str]] = (
    ("HANDSHAKE AND TIMEOUTS", r"""
After connecting, the client sends a 0xFF byte (which resets the agent's
parser) and \fBguest\-sync\-delimited\fR with a random id, discards
everything up to the agent's 0xFF delimiter and waits for the matching
reply.  Every request carries an id and stale replies are skipped.  No wait
is unbounded: the handshake and every reply are limited by \fB\-\-timeout\fR.
"""),
    ("EXAMPLES", r"""
.nf
qga\-client \-s /run/libvirt/qemu/channel/1\-vm/org.qemu.guest_agent.0 ping
qga\-client \-s SOCK exec \-\- uname \-a
qga\-client \-s SOCK cat /etc/os\-release
qga\-client \-s SOCK raw \(aq{"execute":"guest\-get\-time"}\(aq
.fi
"""),
    ("SEE ALSO", r"""
\fBqemu\-ga\-py\fR(8), \fBvirsh\fR(1) (\fBqemu\-agent\-command\fR)
"""),
)


def render(parser: argparse.ArgumentParser, section: int = 8,
           extra_sections: Optional[Sequence[Tuple[str, str]]] = None,
           version: Optional[str] = None, date: Optional[str] = None,
           manual: str = "System Administration") -> str:
    """Return a complete roff man page for ``parser``.

    ``date`` defaults to ``$SOURCE_DATE_EPOCH`` (reproducible package builds)
    or today.
    """
    if date is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        when = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
                if epoch and epoch.isdigit() else datetime.datetime.now(datetime.timezone.utc))
        date = when.strftime("%Y-%m-%d")
    prog = parser.prog
    # NAME wants one short line: the description's first sentence.
    name_line = re.split(r"(?<=\.)\s", parser.description.strip())[0] if parser.description else prog
    out: List[str] = [
        '.\\" Generated by qga.host.manpage from the argparse definitions; do not edit.',
        f'.TH "{_esc(prog.upper())}" "{section}" "{date}" '
        f'"{_esc((prog + " " + version) if version else prog)}" "{manual}"',
        # Paths and option names must not be hyphenated or stretched.
        ".nh",
        ".ad l",
        ".SH NAME",
        f"{_esc(prog)} \\- {_para(name_line.rstrip('.'))}",
        ".SH SYNOPSIS",
        _synopsis(parser),
    ]
    if parser.description:
        out += [".SH DESCRIPTION", _para(parser.description)]
    out.append(".SH OPTIONS")
    for title, description, actions in _groups(parser):
        if title.lower() not in ("options", "optional arguments", "positional arguments"):
            out.append(f'.SS "{_esc(title)}"')
        if description:
            out += [".PP", _para(description)]
        for action in actions:
            out += [".TP", _option_term(action)]
            if action.help:
                out.append(_para(_expand_help(action, prog)))
    out += _commands(parser, prog)
    for title, body in (EXTRA_SECTIONS if extra_sections is None else extra_sections):
        out.append(f".SH {title}")
        out.append(body.strip("\n"))
    if parser.epilog:
        out += [".SH NOTES", _para(parser.epilog)]
    return "\n".join(out) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m qga.host.manpage [--page qga-client] [-o FILE]``: write a man page."""
    ap = argparse.ArgumentParser(prog="python -m qga.host.manpage",
                                 description="Write the qemu-ga-py(8) man page (roff) to stdout.")
    ap.add_argument("-o", "--output", help="write to FILE instead of stdout")
    ap.add_argument("--page", choices=["qemu-ga-py", "qga-client"], default="qemu-ga-py",
                    help="which page: qemu-ga-py(8) (default) or qga-client(1)")
    opts = ap.parse_args(argv)
    from qga import __version__

    if opts.page == "qga-client":
        from qga.host.cli import build_parser as client_parser

        text = render(client_parser(), section=1, version=__version__,
                      extra_sections=CLIENT_SECTIONS, manual="User Commands")
    else:
        from qga.cli import build_parser  # the single source of truth for the options

        text = render(build_parser(), section=8, version=__version__)
    if opts.output:
        with open(opts.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
