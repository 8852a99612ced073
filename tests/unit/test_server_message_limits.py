"""``server/parse.py``'s message limits: codex's value count and nesting depth, found without
parsing, in linear time whatever the text (issue 18). The words are checked against codex in
``tests/conformance/test_conformance_edges.py``."""

from __future__ import annotations

import base64
import time

import pytest

from execsdk.server.parse import MAX_DEPTH, MAX_VALUES, limit_problem, parse, parse_bulk

_HEAD = '{"id":1,"method":"environment/status","params":'
_LIMIT = f"JSON-RPC message exceeds the limit of {MAX_VALUES} JSON values"


def _array(n: int) -> str:
    # top object, id, method, params object, x list: 5 values before the elements
    return _HEAD + '{"x":[' + ",".join(["1"] * (n - 5)) + "]}}"


@pytest.mark.parametrize("as_bytes", [False, True])
def test_value_limit_boundary(as_bytes: bool) -> None:
    ok, over = _array(MAX_VALUES), _array(MAX_VALUES + 1)
    assert limit_problem(ok.encode() if as_bytes else ok) is None
    problem = limit_problem(over.encode() if as_bytes else over)
    assert problem == f"{_LIMIT} at line 1 column {len(over) - 4}"  # just before the last "1"


@pytest.mark.parametrize("as_bytes", [False, True])
def test_depth_boundary(as_bytes: bool) -> None:
    def nested(containers: int) -> str:
        lists = containers - 2  # the top object and params
        return _HEAD + '{"x":' + "[" * lists + "]" * lists + "}}"

    ok, over = nested(MAX_DEPTH), nested(MAX_DEPTH + 1)
    assert limit_problem(ok.encode() if as_bytes else ok) is None
    column = len(_HEAD) + len('{"x":') + MAX_DEPTH - 1
    problem = limit_problem(over.encode() if as_bytes else over)
    assert problem == f"recursion limit exceeded at line 1 column {column}"


def test_columns_count_bytes_and_lines() -> None:
    text = '{"é":\n[' + ",".join(["1"] * MAX_VALUES) + "]}"
    line_two = "[" + "1," * (MAX_VALUES - 2)  # values: object, list, then the elements
    expected = f"{_LIMIT} at line 2 column {len(line_two)}"
    assert limit_problem(text) == expected
    assert limit_problem(text.encode()) == expected


def test_separators_inside_strings_are_not_values() -> None:
    text = _HEAD + '{"x":"' + '[,:{\\"' * 200_000 + '"}}'
    assert limit_problem(text) is None
    assert limit_problem(text.encode()) is None


def test_the_earlier_limit_wins() -> None:
    deep_then_many = _HEAD + '{"a":' + "[" * 200 + "]" * 200 + ',"b":' + _array(MAX_VALUES)[:-1]
    problem = limit_problem(deep_then_many)
    assert problem is not None and problem.startswith("recursion limit")


@pytest.mark.parametrize(
    "text",
    [
        '"' + '\\"' * 4_000_000 + "," * 300_000,  # an unterminated string full of escaped quotes
        "[" + " " * 4_000_000 + "," * 300_000,  # a long run of whitespace
        '"[' * 1_000_000 + "[" * 200,  # many quotes and brackets
        "[" * 200 + "x" * 8_000_000,  # deep, then a long tail without brackets
    ],
    ids=["escaped-quotes", "whitespace", "quotes", "tail"],
)
def test_pathological_text_is_scanned_in_linear_time(text: str) -> None:
    start = time.monotonic()
    limit_problem(text)
    limit_problem(text.encode())
    assert time.monotonic() - start < 3.0


def test_parse_refuses_before_parsing() -> None:
    with pytest.raises(ValueError, match="exceeds the limit of 262144 JSON values"):
        parse(_array(MAX_VALUES + 1))


def test_bulk_message_with_too_many_values_takes_the_full_path() -> None:
    data = base64.b64encode(b"x" * 30_000).decode()
    many = ",".join(f'"k{i}":1' for i in range(MAX_VALUES))
    raw = (
        '{"id":1,"method":"fs/writeFile","params":{"path":"file:///tmp/x","dataBase64":"'
        + data
        + '",'
        + many
        + "}}"
    )
    assert parse_bulk(raw) is None
    with pytest.raises(ValueError, match="exceeds the limit"):
        parse(raw)
    small = '{"id":1,"method":"fs/writeFile","params":{"path":"file:///tmp/x","dataBase64":"'
    taken = parse_bulk(small + data + '"}}')
    assert isinstance(taken, dict)
    assert taken["params"]["dataBase64"].data == b"x" * 30_000
