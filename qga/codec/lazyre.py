"""Regexes compiled on first use: compiling them all costs the agent's start-up.

A :class:`LazyPattern` stands where the compiled pattern would; the first
``match``/``search``/``sub`` compiles it, and from then on those names are
the compiled pattern's own methods (instance attributes), so a hot path
pays nothing more than it would for ``re.compile``'s result.
"""
from __future__ import annotations

import re
import sys
from typing import AnyStr, Callable, Generic, Optional, Union

_METHODS = ("match", "search", "sub")
#: What ``match`` and ``search`` read: a str or bytes like the pattern, or a bytearray (the lexer's buffer).
_Text = Union[AnyStr, bytearray]


def _no_match(string: object, pos: int = 0, endpos: int = sys.maxsize) -> None:
    return None


class LazyPattern(Generic[AnyStr]):
    """``re.compile(pattern)``, compiled when first used (or put off by :meth:`defer`)."""

    def __init__(self, pattern: AnyStr) -> None:
        self.pattern: AnyStr = pattern
        self._compiled: Optional["re.Pattern[AnyStr]"] = None

    def compile(self) -> "re.Pattern[AnyStr]":
        """Compile the pattern (once) and bind its methods here."""
        if self._compiled is None:
            self._compiled = re.compile(self.pattern)
            for name in _METHODS:
                setattr(self, name, getattr(self._compiled, name))
        return self._compiled

    def defer(self) -> None:
        """Match nothing until :meth:`compile` (no effect once compiled).

        For a pattern whose matches are only a short cut (the lexer's fast
        path): the agent compiles it once its first reply has left.
        """
        if self._compiled is None:
            self.match = _no_match  # type: ignore[method-assign]

    def match(self, string: _Text[AnyStr], pos: int = 0, endpos: int = sys.maxsize) -> Optional["re.Match[AnyStr]"]:
        """As :meth:`re.Pattern.match`."""
        return self.compile().match(string, pos, endpos)  # type: ignore[arg-type]  # bytearray: bytes patterns only

    def search(self, string: _Text[AnyStr], pos: int = 0, endpos: int = sys.maxsize) -> Optional["re.Match[AnyStr]"]:
        """As :meth:`re.Pattern.search`."""
        return self.compile().search(string, pos, endpos)  # type: ignore[arg-type]  # as in match

    def sub(self, repl: Union[AnyStr, Callable[["re.Match[AnyStr]"], AnyStr]], string: AnyStr,
            count: int = 0) -> AnyStr:
        """As :meth:`re.Pattern.sub`."""
        return self.compile().sub(repl, string, count)
