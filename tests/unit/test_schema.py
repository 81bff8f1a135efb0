"""Argument validation produces QEMU's input-visitor texts, in QEMU's order."""
from __future__ import annotations

import pytest

from qga.errors import QgaError
from qga.schema import Alternate, Enum, Struct, compile_args

SEEK = Alternate("GuestFileWhence", ["int", Enum("QGASeek", "set", "cur", "end")])
CPU = Struct("GuestLogicalProcessor", {"logical-id": "int", "online": "bool", "*can-offline": "bool"})
MEMBLK = Struct("GuestMemoryBlock", {"phys-index": "uint64", "online": "bool", "*can-offline": "bool"})
CAPTURE = Alternate("GuestExecCaptureOutput", ["bool", Enum("GuestExecCaptureOutputMode",
                                                             "none", "stdout", "stderr", "separated", "merged")])


def error_of(schema: dict, arguments: dict) -> str:
    with pytest.raises(QgaError) as info:
        compile_args(schema)(arguments)
    return info.value.desc


@pytest.mark.parametrize("value", ["5", 1.5, 1.0, 2**64 - 1, True, None, [], {}])
def test_int_rejects_everything_but_int64(value: object) -> None:
    assert error_of({"id": "int"}, {"id": value}) == "Invalid parameter type for 'id', expected: integer"


def test_int64_bounds_accepted() -> None:
    v = compile_args({"id": "int"})
    assert v({"id": -(2**63)}) == {"id": -(2**63)}
    assert v({"id": 2**63 - 1}) == {"id": 2**63 - 1}


def test_missing_and_unexpected() -> None:
    assert error_of({"id": "int"}, {}) == "Parameter 'id' is missing"
    assert error_of({}, {"foo": 42}) == "Parameter 'foo' is unexpected"
    # Missing members are reported before leftovers, whatever the input order.
    assert error_of({"id": "int"}, {"x": 1}) == "Parameter 'id' is missing"


def test_members_checked_in_schema_order() -> None:
    schema = {"handle": "int", "offset": "int", "whence": SEEK}
    assert error_of(schema, {"whence": "bogus", "offset": "x", "handle": 1}) == \
        "Invalid parameter type for 'offset', expected: integer"


def test_optional_null_is_a_type_error() -> None:
    assert error_of({"*count": "int"}, {"count": None}) == \
        "Invalid parameter type for 'count', expected: integer"


def test_absent_optional_not_passed_and_dashes_become_underscores() -> None:
    v = compile_args({"handle": "int", "buf-b64": "str", "*count": "int"})
    assert v({"handle": 1, "buf-b64": "QQ=="}) == {"handle": 1, "buf_b64": "QQ=="}


def test_nested_paths() -> None:
    schema = {"vcpus": [CPU]}
    assert error_of(schema, {"vcpus": [{"logical-id": 0}]}) == "Parameter 'vcpus[0].online' is missing"
    assert error_of(schema, {"vcpus": [{"logical-id": 0, "online": True, "x": 1}]}) == \
        "Parameter 'vcpus[0].x' is unexpected"
    assert error_of(schema, {"vcpus": {}}) == "Invalid parameter type for 'vcpus', expected: array"
    assert error_of(schema, {"vcpus": [1]}) == "Invalid parameter type for 'vcpus[0]', expected: object"
    assert error_of({"arg": ["str"]}, {"arg": ["a", 1]}) == \
        "Invalid parameter type for 'arg[1]', expected: string"


def test_uint64_wraps_negative_values() -> None:
    v = compile_args({"mem-blks": [MEMBLK]})
    out = v({"mem-blks": [{"phys-index": -1, "online": True}]})
    assert out == {"mem_blks": [{"phys-index": 18446744073709551615, "online": True}]}
    for bad in ("x", 1.5, 2**64, True):
        assert error_of({"mem-blks": [MEMBLK]}, {"mem-blks": [{"phys-index": bad, "online": True}]}) == \
            "Parameter 'mem-blks[0].phys-index' expects uint64"


def test_enum_and_alternates() -> None:
    v = compile_args({"whence": SEEK})
    assert v({"whence": 2}) == {"whence": 2}
    assert v({"whence": "end"}) == {"whence": "end"}
    assert error_of({"whence": SEEK}, {"whence": "bogus"}) == "Parameter 'whence' does not accept value 'bogus'"
    assert error_of({"whence": SEEK}, {"whence": True}) == \
        "Invalid parameter type for 'whence', expected: GuestFileWhence"
    assert error_of({"whence": SEEK}, {"whence": 1.5}) == \
        "Invalid parameter type for 'whence', expected: integer"
    c = compile_args({"*capture-output": CAPTURE})
    assert c({"capture-output": True}) == {"capture_output": True}
    assert c({"capture-output": "merged"}) == {"capture_output": "merged"}
    assert error_of({"*capture-output": CAPTURE}, {"capture-output": 1}) == \
        "Invalid parameter type for 'capture-output', expected: GuestExecCaptureOutput"
    assert error_of({"mode": Enum("M", "a")}, {"mode": 1}) == \
        "Invalid parameter type for 'mode', expected: string"


def test_number_accepts_int_and_float() -> None:
    v = compile_args({"n": "number"})
    assert v({"n": 1}) == {"n": 1} and v({"n": 0.5}) == {"n": 0.5}
    assert error_of({"n": "number"}, {"n": "1"}) == "Invalid parameter type for 'n', expected: number"
    assert error_of({"b": "bool"}, {"b": 1}) == "Invalid parameter type for 'b', expected: boolean"
