"""JSON serialisation byte-identical to QEMU's compact writer (spec 1.3, 1.10).

* separators ``": "`` and ``", "``; the reply ends with ``\\n``;
* strings: short escapes for ``\\b \\f \\n \\r \\t``, ``\\"`` and ``\\\\``;
  every other code point below 0x20 or from 0x7F up as upper-case
  ``\\uXXXX`` (surrogate pairs above U+FFFF); ``/`` is not escaped; text
  QEMU's reader would find invalid becomes ``\\uFFFD``;
* floats with C ``%.17g``; a number outside the double range is echoed as
  the text the client sent (qemu-ga prints ``inf``, which no JSON parser
  reads back, so the client would lose the whole reply);
* object members in QDict hash-table order.

The C encoder of the ``json`` module does the escaping (its escape set is
QEMU's, only the hex case differs), so large strings cost a few passes at
memory speed; a regex fix-up runs only when the output contains ``\\u``.
"""
from __future__ import annotations

import math
import operator
import re
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Sequence, Tuple, Union

try:  # the json package's own C function: importing the package costs the start-up a ms
    from _json import encode_basestring_ascii as _escape
except ImportError:  # an interpreter without json's accelerator
    from json.encoder import encode_basestring_ascii as _escape

from qga import qbase64
from qga.codec.lazyre import LazyPattern
from qga.codec.qdict import member_order
from qga.codec.tokens import OutOfRangeNumber
from qga.codec.utf8 import qemu_lossy_decode, valid_codepoint

__all__ = ["Base64Pieces", "Encoded", "JsonText", "OutOfRangeNumber", "Reply", "base64_text", "dump_pieces", "dumps",
           "object_template"]

#: A serialised reply: bytes, or pieces whose concatenation it is (see :func:`dump_pieces`).
Reply = Union[bytes, Sequence[bytes]]

# One \uXXXX escape, a pair of them, or an escaped backslash (which must be
# skipped so that a literal "\\u0041" in the text is left alone).
_FIXUP = LazyPattern(r"\\\\|\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})|\\u([0-9a-f]{4})")
_SURROGATES = LazyPattern("[\ud800-\udfff]")
_UNESCAPABLE = LazyPattern("[\ud800-\udc7f\udd00-\udfff]")


def _fix(m: re.Match[str]) -> str:
    whole = m.group()
    if whole == "\\\\":
        return whole
    if m.group(3) is not None:
        cp = int(m.group(3), 16)
        return "\\u" + m.group(3).upper() if valid_codepoint(cp) else "\\uFFFD"
    hi, lo = int(m.group(1), 16), int(m.group(2), 16)
    cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
    return whole.upper().replace("\\U", "\\u") if valid_codepoint(cp) else "\\uFFFD"


def _qemu_text(s: str) -> str:
    """What QEMU would print for the bytes a surrogateescape'd str stands for."""
    s = _UNESCAPABLE.sub("\ufffd", s)
    return qemu_lossy_decode(s.encode("utf-8", "surrogateescape").replace(b"\0", b"\xc0\x80"))


def _string(s: str) -> str:
    out = _escape(s)
    if "\\u" in out:
        if "\\ud" in out and _SURROGATES.search(s):
            out = _escape(_qemu_text(s))
        out = _FIXUP.sub(_fix, out)
    return out


def _float(x: float) -> str:
    if math.isfinite(x):
        return "%.17g" % x  # noqa: UP031 -- C printf semantics are the point
    if isinstance(x, OutOfRangeNumber):
        return x.text
    # No request can carry these (JSON has no literal for them); should a
    # handler ever produce one, print something every JSON parser accepts.
    if math.isnan(x):
        return "null"
    return "1e999" if x > 0 else "-1e999"


def base64_text(data: Union[bytes, bytearray, memoryview]) -> bytes:
    """Standard base64 of ``data`` (padded, no newline), ready to be a reply string.

    Handlers return it as is: :func:`dumps` writes ``bytes`` verbatim between
    quotes, so a big ``buf-b64``/``out-data`` skips the decode to str, the
    re-encode and a copy (up to 64 MiB each).
    """
    return qbase64.encode(data)


class Base64Pieces(Tuple[bytes, ...]):
    """One reply string given as the base64 of consecutive chunks of data.

    Each piece is :func:`base64_text` of a chunk whose length is a multiple
    of three (the last excepted), so the pieces concatenate to the base64 of
    the whole.  A big guest-file-read encodes chunk by chunk into these: the
    data is never held whole beside its base64.  The writer puts the pieces
    between quotes as they are, without a scan: our encoder's alphabet needs
    no escaping.
    """

    __slots__ = ()


# Bytes a string may hold that need no escaping at all.
_SAFE = bytes(i for i in range(0x20, 0x7F) if i not in (0x22, 0x5C))
_BIG = 1 << 16


class Encoded(Dict[str, Any]):
    """An object whose JSON text is written once, when it is made, and copied into each reply.

    For a reply a handler keeps while it cannot change (guest-get-osinfo's,
    until its file does); it must not be modified once made.
    """

    __slots__ = ("text",)

    def __init__(self, members: Dict[str, Any]) -> None:
        """The members, in their insertion order (which decides the QDict order)."""
        super().__init__(members)
        self.text = dumps(members)[:-1].decode("ascii")


class JsonText(str):
    """A value given as its JSON text (ASCII, as QEMU writes it), copied into the reply as is.

    For counters read afresh at every call (/proc/stat, /proc/diskstats): the
    handler fills :func:`object_template` templates from the numbers it parsed,
    which skips building one dict per line and writing it back.
    """

    __slots__ = ()

    @classmethod
    def array(cls, items: Iterable[str]) -> "JsonText":
        """The array of ``items``, each a value's JSON text."""
        return cls("[" + ", ".join(items) + "]")


class _Shape(NamedTuple):
    """How objects with one sequence of keys are written."""

    #: The keys in QDict order.
    order: Tuple[str, ...]
    #: ``{"key": %s, ...}`` in that order: the whole object in one %-format
    #: when every value is a scalar the template takes (see _SCALARS).
    template: str
    #: ``{"key": `` then ``, "key": `` ... for objects with other values.
    heads: Tuple[str, ...]
    #: The values of an object of this shape, as a tuple in that order.
    values: Callable[[Dict[str, Any]], Tuple[Any, ...]]


#: Shapes by the keys in insertion order, computed once per process: replies
#: have few shapes (bounded, as ids and unknown keys may be anything).
_SHAPES: Dict[Tuple[str, ...], _Shape] = {}
_SHAPES_MAX = 1024
_SHAPE_KEYS_MAX = 32
#: Values a template takes: %s of an exact int is its JSON text, a str goes
#: through _string, booleans and None through _CONSTANTS.  Not floats (%.17g),
#: containers or bytes.
_SCALARS = frozenset((int, str, bool, type(None)))
_INTS = frozenset((int,))
_CONSTANTS = {True: "true", False: "false", None: "null"}


def _shape(keys: Tuple[str, ...]) -> _Shape:
    order = keys if len(keys) == 1 else member_order(keys)
    texts = [_string(k) + ": " for k in order]
    # itemgetter of one key returns the value, not a 1-tuple.
    values = operator.itemgetter(*order) if len(order) > 1 else lambda obj: (obj[order[0]],)
    shape = _Shape(order, "{" + "%s, ".join(t.replace("%", "%%") for t in texts) + "%s}",
                   tuple(("{" if i == 0 else ", ") + t for i, t in enumerate(texts)), values)
    if len(_SHAPES) < _SHAPES_MAX and len(keys) <= _SHAPE_KEYS_MAX and all(len(k) <= 32 for k in keys):
        _SHAPES[keys] = shape
    return shape


def object_template(keys: Tuple[str, ...]) -> Tuple[str, Tuple[int, ...]]:
    """``{"key": %s, ...}`` for objects with ``keys`` (insertion order), and which key each ``%s`` is.

    The keys go in QDict order, as :func:`dumps` writes such an object; the
    second item gives, for each ``%s`` in turn, the key's index in ``keys``.
    Each ``%s`` takes a value's JSON text (an int as is).
    """
    shape = _SHAPES.get(keys) or _shape(keys)
    return shape.template, tuple(keys.index(k) for k in shape.order)


def _write(obj: Any, out: list[Any]) -> None:
    if type(obj) is bytes:
        # Text handed over as bytes (base64): it must need no escaping, which
        # translate() checks at C speed without copying it.
        if obj.translate(None, _SAFE):
            raise TypeError("bytes in a reply must be printable ASCII without quotes or backslashes")
        out.append(b'"')
        out.append(obj)
        out.append(b'"')
    elif type(obj) is Base64Pieces:
        out.append(b'"')
        out.extend(obj)
        out.append(b'"')
    elif isinstance(obj, str):
        if type(obj) is JsonText:
            out.append(obj)
            return
        if len(obj) > _BIG and obj.isascii():
            # Big replies are base64: encoding an ASCII str is a memcpy and
            # a translate() scan proves nothing needs escaping.  The bytes
            # piece then goes into the output as is (one copy less).
            raw = obj.encode("ascii")
            if not raw.translate(None, _SAFE):
                out.append(b'"')
                out.append(raw)
                out.append(b'"')
                return
        out.append(_string(obj))
    elif isinstance(obj, dict):
        if type(obj) is Encoded:
            out.append(obj.text)
        else:
            _write_dict(obj, out)
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif obj is None:
        out.append("null")
    elif isinstance(obj, int):
        out.append(int.__repr__(obj))
    elif isinstance(obj, float):
        out.append(_float(obj))
    elif isinstance(obj, (list, tuple)):
        if not obj:
            out.append("[]")
            return
        sep = "["
        for v in obj:
            out.append(sep)
            # Inventory replies are lists of objects: no type tests first.
            if type(v) is dict:
                _write_dict(v, out)
            else:
                _write(v, out)
            sep = ", "
        out.append("]")
    else:
        raise TypeError(f"cannot serialise {type(obj).__name__} as JSON")


def _write_dict(obj: Dict[str, Any], out: List[Any]) -> None:
    if not obj:
        out.append("{}")
        return
    keys = tuple(obj)
    shape = _SHAPES.get(keys) or _shape(keys)
    values = shape.values(obj)
    types = set(map(type, values))
    if types <= _INTS:
        out.append(shape.template % values)
    elif types <= _SCALARS:
        out.append(shape.template % tuple([v if type(v) is int else _string(v) if type(v) is str else _CONSTANTS[v]
                                           for v in values]))
    else:
        for head, v in zip(shape.heads, values):
            out.append(head)
            # The members of inventory replies, without the type tests of _write.
            t = type(v)
            if t is int:
                out.append(int.__repr__(v))
            elif t is str and len(v) <= _BIG:
                out.append(_string(v))
            elif t is dict:
                _write_dict(v, out)
            else:
                _write(v, out)
        out.append("}")


_END = object()


def _write_deep(obj: Any, out: list[Any]) -> None:
    """Iterative twin of _write for values nested deeper than Python recursion.

    The parser accepts 1024 levels, and an id that deep is echoed back.
    """
    stack: list[list[Any]] = []   # [iterator over keys/items, closer, dict or None, first]
    pending = obj
    while True:
        if isinstance(pending, dict) and pending:
            keys = tuple(pending)
            order = keys if len(keys) == 1 else member_order(keys)
            out.append("{")
            stack.append([iter(order), "}", pending, True])
        elif isinstance(pending, (list, tuple)) and pending:
            out.append("[")
            stack.append([iter(pending), "]", None, True])
        else:
            _write(pending, out)
        while stack:
            frame = stack[-1]
            nxt: Any = next(frame[0], _END)
            if nxt is _END:
                out.append(frame[1])
                stack.pop()
                continue
            if frame[3]:
                frame[3] = False
            else:
                out.append(", ")
            if frame[2] is not None:
                out.append(_string(nxt))
                out.append(": ")
                pending = frame[2][nxt]
            else:
                pending = nxt
            break
        else:
            return


def _pieces(obj: Any, head: str = "", tail: str = "\n") -> List[Any]:
    out: List[Any] = [head]   # str pieces, and bytes for big verbatim strings
    try:
        _write(obj, out)
    except RecursionError:
        out = [head]
        _write_deep(obj, out)
    out.append(tail)
    return out


def dumps(obj: Any) -> bytes:
    """Serialise ``obj`` exactly as qemu-ga writes a reply, with trailing newline."""
    out = _pieces(obj)
    if b'"' in out:
        return b"".join(p if isinstance(p, bytes) else p.encode("ascii") for p in out)
    # Everything is ASCII by now; encoding a compact ASCII str is a memcpy.
    return "".join(out).encode("ascii")


def dump_pieces(obj: Any, head: str = "", tail: str = "\n") -> Reply:
    """:func:`dumps` as pieces whose concatenation is its result.

    Text handed over as bytes (base64 of file data, up to 64 MiB) stays a
    piece of its own, so the channel can send it with ``writev`` instead of
    copying it into one joined reply; the small parts around it are joined.
    Without big text the result is plain bytes.  ``head`` and ``tail`` (ASCII
    JSON text) go around it: a reply's ``{"return": `` and ``}``.
    """
    out = _pieces(obj, head, tail)
    if b'"' not in out:
        return "".join(out).encode("ascii")
    pieces: List[bytes] = []
    small: List[str] = []
    for p in out:
        if type(p) is not bytes:
            small.append(p)
        elif len(p) < _BIG:
            small.append(p.decode("ascii"))   # _write checked it is printable ASCII
        else:
            if small:
                pieces.append("".join(small).encode("ascii"))
                small = []
            pieces.append(p)
    pieces.append("".join(small).encode("ascii"))
    return pieces if len(pieces) > 1 else pieces[0]
