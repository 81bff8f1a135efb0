"""Token types shared by the lexer and the parser, and the one value type of our own."""
from __future__ import annotations

#: Structural characters, strings, numbers (integer or not) and keywords.
LC, RC, LS, RS, COLON, COMMA, STR, INT, FLOAT, KW = range(10)


class OutOfRangeNumber(float):
    """A JSON number too large for a double (``1e999``): infinite, and its text.

    The parser makes one for such a number; the writer prints ``text`` so
    that the echoed ``id`` reads back as the value the client sent.
    """

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> "OutOfRangeNumber":
        """The number ``text`` (a valid JSON number whose value overflows)."""
        obj = super().__new__(cls, text)
        obj.text = text
        return obj
