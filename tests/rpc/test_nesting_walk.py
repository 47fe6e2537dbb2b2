"""The nesting-depth checks agree with a plain reference count on any JSON
value, and never recurse themselves."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aspen.errors import AspenError
from aspen.rpc.nesting import check_depth, check_value_depth, msgpack_may_exceed

TRICKY = st.sampled_from('[{]}"\\é:,a')  # what could fool a scan that ignores strings
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(TRICKY, max_size=8)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(TRICKY, max_size=3), inner, max_size=3),
    max_leaves=40,
)


def depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def refused(check, data, max_depth: int) -> bool:
    try:
        check(data, max_depth=max_depth)
    except AspenError as exc:
        assert exc.code == "VALIDATION_ERROR" and exc.details == {"max_depth": max_depth}
        return True
    return False


@settings(max_examples=400, deadline=None)
@given(VALUES, st.integers(0, 8))
def test_checks_agree_with_the_reference_depth(value, max_depth):
    too_deep = depth(value) > max_depth
    raw = msgspec.json.encode(value)
    assert refused(check_depth, raw, max_depth) == too_deep
    assert refused(check_depth, raw.decode(), max_depth) == too_deep
    assert refused(check_value_depth, value, max_depth) == too_deep
    packed = msgspec.msgpack.encode(value)
    assert refused(check_value_depth, msgspec.msgpack.decode(packed), max_depth) == too_deep
    if too_deep:
        assert msgpack_may_exceed(packed, max_depth)  # the pre-filter never hides a deep value


@pytest.mark.parametrize("depth_", [65, 1000, 1_000_000])
def test_very_deep_input_is_refused_without_recursing(depth_):
    with pytest.raises(AspenError):
        check_depth(b"[" * depth_ + b"]" * depth_)
    with pytest.raises(AspenError):
        check_depth(b'{"a":' * depth_ + b"1" + b"}" * depth_)
    deep: list = []
    for _ in range(min(depth_, 100_000)):
        deep = [deep]
    with pytest.raises(AspenError):
        check_value_depth(deep)


def test_malformed_text_is_left_to_the_decoder():
    check_depth(b"]" * 1000)  # not JSON: the decoder reports it
    check_depth(b'"' + b"[" * 1000)  # an unterminated string
    check_depth(b"[]" * 100 + b"]")  # an unpaired closer
    with pytest.raises(AspenError):  # malformed, but only after it got too deep
        check_depth(b"[" * 100 + b"]" * 100 + b"}")
