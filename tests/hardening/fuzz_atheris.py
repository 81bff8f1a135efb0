"""Coverage-guided fuzzing of the request path with atheris (libFuzzer).

Run::

    python -m tests.hardening.fuzz_atheris -runs=1000000 [-max_len=65536] [CORPUS_DIR]

Each input is fed to an in-process agent (JsonStreamParser + Dispatcher,
side-effecting handlers stubbed) in up to four chunks, followed by 0xFF +
``guest-sync-delimited``.  A crash is: an exception escaping the agent, a
malformed reply line, an "internal error" reply, or the sync not answered.
``tests/hardening/test_atheris.py`` runs it in CI with a small ``-runs``.
"""
from __future__ import annotations

import sys
import tempfile

import atheris

with atheris.instrument_imports():
    import qga.dispatch  # noqa: F401
    import qga.codec.lexer  # noqa: F401
    import qga.codec.writer  # noqa: F401
    import qga.schema  # noqa: F401

from tests.hardening.inproc import InProcessAgent  # noqa: E402
from tests.hardening.util import parse_reply_line  # noqa: E402

_AGENT = InProcessAgent(tempfile.mkdtemp(prefix="qga-atheris-"), deadline=10.0)
_SYNC = b'\xff{"execute": "guest-sync-delimited", "arguments": {"id": 424242}}'


def test_one_input(data: bytes) -> None:
    """One libFuzzer input: the first byte picks the chunking, the rest is the stream."""
    if not data:
        return
    step = max(1, data[0] * 4)
    body = data[1:]
    _AGENT.take()
    for pos in range(0, len(body), step):
        _AGENT.feed(body[pos:pos + step])
    _AGENT.feed(_SYNC)
    lines = _AGENT.take()
    for line in lines:
        reply = parse_reply_line(line)
        if "error" in reply and reply["error"]["desc"].startswith("internal error"):
            raise AssertionError(f"handler exception leaked: {line!r}")
    if not lines or lines[-1] != b'\xff{"return": 424242}\n':
        raise AssertionError(f"sync not answered last: {lines[-3:]!r}")


def main(argv: list) -> None:
    """libFuzzer entry point (arguments as libFuzzer takes them)."""
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
