"""Argument schemas and QAPI-identical input validation.

A command's arguments are written as in QEMU's ``qapi-schema.json``: an ordered
mapping of member names to types, a leading ``*`` marking an optional member::

    {"handle": "int", "*count": "int"}
    {"vcpus": [GuestLogicalProcessor]}

Types are the strings ``int``, ``uint64``, ``number``, ``bool``, ``str``, a
one-element list ``[T]`` for arrays, or an :class:`Enum`, :class:`Struct` or
:class:`Alternate` instance.  :func:`compile_args` turns that into a validator
whose error texts are the ones QEMU's input visitor produces, with nested paths
(``vcpus[0].online``), members checked in schema order and leftovers reported
afterwards as ``Parameter 'x' is unexpected``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from qga.errors import QgaError
from qga.codec.qdict import member_order

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1

TypeSpec = Union[str, List[Any], "Enum", "Struct", "Alternate"]


class Enum:
    """A QAPI enum: a string restricted to ``values``."""

    def __init__(self, name: str, *values: str) -> None:
        self.name = name
        self.values = frozenset(values)


class Struct:
    """A QAPI struct used as an argument member (e.g. GuestLogicalProcessor)."""

    def __init__(self, name: str, members: Mapping[str, TypeSpec]) -> None:
        self.name = name
        self.members = _compile_members(members)


class Alternate:
    """A QAPI alternate: the JSON type of the value picks the branch.

    ``branches`` maps a JSON kind (``int``, ``bool``, ``str``) to the type used
    for it; a value of any other kind is rejected naming the alternate.
    """

    def __init__(self, name: str, branches: Sequence[TypeSpec]) -> None:
        self.name = name
        self.branches: Dict[str, TypeSpec] = {}
        for branch in branches:
            self.branches[_json_kind_of_type(branch)] = branch


def _json_kind_of_type(spec: TypeSpec) -> str:
    if isinstance(spec, Enum) or spec == "str":
        return "str"
    if spec in ("int", "uint64", "number"):
        return "num"
    if spec == "bool":
        return "bool"
    if isinstance(spec, list):
        return "list"
    return "dict"


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "num"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return "null"


Member = Tuple[str, bool, TypeSpec]  # (wire name, optional, type)


def _compile_members(members: Mapping[str, TypeSpec]) -> List[Member]:
    out: List[Member] = []
    for key, spec in members.items():
        optional = key.startswith("*")
        out.append((key[1:] if optional else key, optional, spec))
    return out


def _type_error(path: str, expected: str) -> QgaError:
    return QgaError(f"Invalid parameter type for '{path}', expected: {expected}")


def _check(spec: TypeSpec, value: Any, path: str) -> Any:
    """Validate one value against ``spec``; return the converted value."""
    kind = _json_kind(value)
    if spec == "int":
        if kind != "num" or isinstance(value, float) or not INT64_MIN <= value <= INT64_MAX:
            raise _type_error(path, "integer")
        return value
    if spec == "uint64":
        # QEMU's visitor accepts negative int64 for uint64 and wraps it; every
        # failure (wrong type, float, out of range) has this one text.
        if kind != "num" or isinstance(value, float) or not INT64_MIN <= value <= UINT64_MAX:
            raise QgaError(f"Parameter '{path}' expects uint64")
        return value & UINT64_MAX
    if spec == "number":
        if kind != "num":
            raise _type_error(path, "number")
        return value
    if spec == "bool":
        if kind != "bool":
            raise _type_error(path, "boolean")
        return value
    if spec == "str":
        if kind != "str":
            raise _type_error(path, "string")
        return value
    if isinstance(spec, Enum):
        if kind != "str":
            raise _type_error(path, "string")
        if value not in spec.values:
            raise QgaError(f"Parameter '{path}' does not accept value '{value}'")
        return value
    if isinstance(spec, list):
        if kind != "list":
            raise _type_error(path, "array")
        return [_check(spec[0], item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(spec, Struct):
        if kind != "dict":
            raise _type_error(path, "object")
        return _check_members(spec.members, value, path + ".")
    if isinstance(spec, Alternate):
        branch = spec.branches.get(kind)
        if branch is None:
            raise _type_error(path, spec.name)
        return _check(branch, value, path)
    raise TypeError(f"bad schema type {spec!r}")


def _check_members(members: List[Member], obj: Dict[str, Any], prefix: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for name, optional, spec in members:
        if name not in obj:
            if not optional:
                raise QgaError(f"Parameter '{prefix}{name}' is missing")
            continue
        out[name] = _check(spec, obj[name], prefix + name)
    if len(out) != len(obj):
        # Leftovers are reported in QDict iteration order, as QEMU does.
        leftovers = [k for k in obj if k not in out]
        first = member_order(leftovers)[0]
        raise QgaError(f"Parameter '{prefix}{first}' is unexpected")
    return out


Validator = Callable[[Dict[str, Any]], Dict[str, Any]]


def compile_args(members: Optional[Mapping[str, TypeSpec]]) -> Validator:
    """Build the validator for a command's ``arguments`` object.

    The validator returns a dict of Python keyword arguments: wire names with
    ``-`` turned into ``_``; absent optional members are left out so that the
    handler's own defaults apply.
    """
    compiled = _compile_members(members or {})
    pyname = {name: name.replace("-", "_") for name, _, _ in compiled}

    if not compiled:
        def validate_none(arguments: Dict[str, Any]) -> Dict[str, Any]:
            if arguments:
                _check_members(compiled, arguments, "")  # raises "is unexpected"
            return {}

        return validate_none

    def validate(arguments: Dict[str, Any]) -> Dict[str, Any]:
        checked = _check_members(compiled, arguments, "")
        return {pyname[k]: v for k, v in checked.items()}

    return validate
