"""qga.host.manpage: the man page is rendered from the argparse parser behind --help.

A stand-in parser shaped like qemu-ga's options exercises the renderer; the
real qga.cli.build_parser is checked too: every option in --help must appear
in the man page and groff must format it without warnings.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qga.host import manpage

REPO = Path(__file__).resolve().parents[2]


def standin_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qemu-ga-py",
                                description="QEMU Guest Agent, reimplemented in Python. Second sentence.",
                                epilog="Report bugs to the project.")
    p.add_argument("-m", "--method", default="virtio-serial",
                   help="transport method: one of unix-listen, virtio-serial, isa-serial or "
                        "vsock-listen (default: %(default)s)")
    p.add_argument("-p", "--path", metavar="PATH", help="device/socket path")
    p.add_argument("-F", "--fsfreeze-hook", nargs="?", const="/etc/qemu/fsfreeze-hook", metavar="PATH",
                   help="enable fsfreeze hook; default %(const)s")
    p.add_argument("-v", "--verbose", action="store_true", help="log extra debugging info")
    p.add_argument("-b", "--block-rpcs", metavar="LIST", action="append", help="comma-separated list")
    p.add_argument("--secret-test-hook", help=argparse.SUPPRESS)
    p.add_argument("-V", "--version", action="version", version="QEMU Guest Agent 10.2.0")
    g = p.add_argument_group("extensions", "Options that qemu-ga does not have.")
    g.add_argument("--log-format", choices=["plain", "journal"], help="one of %(choices)s")
    return p


def groff_warnings(text: str) -> str:
    groff = shutil.which("groff")
    if groff is None:
        pytest.fail("groff not found: install the Debian package 'groff-base'")
    res = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z"], input=text, capture_output=True,
                         text=True, timeout=60)
    return res.stderr


def formatted(text: str) -> str:
    res = subprocess.run(["groff", "-man", "-Tascii", "-P", "-cbou"], input=text, capture_output=True,
                         text=True, timeout=60)
    return res.stdout


def test_render_standin() -> None:
    text = manpage.render(standin_parser(), version="0.1.0", date="2026-01-01", extra_sections=[])
    assert text.startswith('.\\" Generated')
    assert '.TH "QEMU\\-GA\\-PY" "8" "2026-01-01" "qemu\\-ga\\-py 0.1.0"' in text
    assert "qemu\\-ga\\-py \\- QEMU Guest Agent, reimplemented in Python" in text
    assert "Second sentence" not in text.split(".SH SYNOPSIS")[0]
    assert "\\fB\\-F\\fR[\\fIPATH\\fR], \\fB\\-\\-fsfreeze\\-hook\\fR[=\\fIPATH\\fR]" in text
    assert "\\fB\\-p\\fR \\fIPATH\\fR, \\fB\\-\\-path\\fR=\\fIPATH\\fR" in text
    assert "(default: virtio\\-serial)" in text
    assert "default /etc/qemu/fsfreeze\\-hook" in text
    assert "one of plain, journal" in text
    assert '.SS "extensions"' in text
    assert "secret" not in text
    assert groff_warnings(text) == ""
    plain = formatted(text)
    assert "--fsfreeze-hook[=PATH]" in plain
    assert "QEMU Guest Agent, reimplemented in Python" in plain


def test_roff_escapes() -> None:
    p = argparse.ArgumentParser(prog="x", description=".starts with a dot")
    p.add_argument("--path", help="a \\ backslash and\n'quote at start")
    text = manpage.render(p, extra_sections=[], date="2026-01-01")
    assert "\\&.starts with a dot" in text
    assert "a \\e backslash" in text
    assert groff_warnings(text) == ""


def test_default_extra_sections_format_cleanly() -> None:
    text = manpage.render(standin_parser(), version="0.1.0", date="2026-01-01")
    for section in ("CONFIGURATION FILE", "FILES", "ENVIRONMENT", "EXIT STATUS", "SEE ALSO"):
        assert f".SH {section}" in text
    assert groff_warnings(text) == ""


def test_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    text = manpage.render(standin_parser(), extra_sections=[])
    assert '"1970-01-01"' in text


def test_real_parser_matches_help() -> None:
    """Every option string that --help prints is documented in qemu-ga-py(8)."""
    from qga.cli import build_parser

    parser = build_parser()
    text = manpage.render(parser, version="0", date="2026-01-01")
    assert groff_warnings(text) == ""
    plain = formatted(text)
    help_text = parser.format_help()
    options = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", help_text))
    documented = {o for a in parser._actions if a.help is not argparse.SUPPRESS for o in a.option_strings}
    assert documented <= options
    for opt in documented:
        assert opt in plain, opt


def test_module_entry_point() -> None:
    res = subprocess.run([sys.executable, "-m", "qga.host.manpage"], capture_output=True, text=True,
                         cwd=str(REPO), timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith('.\\" Generated')
    assert ".SH OPTIONS" in res.stdout


def test_client_page_documents_every_subcommand() -> None:
    from qga.host.cli import build_parser

    res = subprocess.run([sys.executable, "-m", "qga.host.manpage", "--page", "qga-client"], capture_output=True,
                         text=True, cwd=str(REPO), timeout=60)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert '.TH "QGA\\-CLIENT" "1"' in text
    assert groff_warnings(text) == ""
    plain = formatted(text)
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert ".SH COMMANDS" in text
    for name in sub.choices:
        assert re.search(r"^ {7}" + re.escape(name) + r"\b", plain, re.M), name
    assert "exec [--timeout=SECS] [--] CMD [ARG]..." in plain
    for opt in ("--socket", "--timeout", "--json"):
        assert opt in plain
