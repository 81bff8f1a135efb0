"""QEMU's JSON dialect: the streaming lexer and parser in, QEMU's exact bytes out.

* :mod:`qga.codec.utf8`: QEMU's UTF-8 rules (modified UTF-8, noncharacters);
* :mod:`qga.codec.tokens`: token types, and numbers beyond the double range;
* :mod:`qga.codec.lexer`: the streaming lexer (:class:`JsonStreamParser`);
* :mod:`qga.codec.parser`: tokens to values with QEMU's rules, and the fast path;
* :mod:`qga.codec.writer`: values to QEMU's reply bytes;
* :mod:`qga.codec.qdict`: QDict member order.
"""
from qga.codec.lexer import JsonParseError, JsonStreamParser
from qga.codec.qdict import member_order
from qga.codec.tokens import OutOfRangeNumber
from qga.codec.writer import Base64Pieces, Encoded, JsonText, Reply, base64_text, dump_pieces, dumps, object_template

__all__ = ["Base64Pieces", "Encoded", "JsonParseError", "JsonStreamParser", "JsonText", "OutOfRangeNumber", "Reply",
           "base64_text", "dump_pieces", "dumps", "member_order", "object_template"]
