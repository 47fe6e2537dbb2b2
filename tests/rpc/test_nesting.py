"""check_depth measures JSON nesting without decoding: exactly (against a
decoder's own count, for any document), with brackets and escapes inside
strings left alone, and for the shapes an attacker sends."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aspen.errors import AspenError, ErrorCode
from aspen.rpc.nesting import check_depth


def depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


def too_deep(data: bytes | str, limit: int) -> bool:
    try:
        check_depth(data, max_depth=limit)
    except AspenError:
        return True
    return False


# Text full of what could fool a scanner: brackets, quotes, backslashes.
tricky_text = st.text(alphabet='[]{}"\\ab:,\n\u00e9', max_size=12)
documents = st.recursive(
    st.none() | st.booleans() | st.integers() | tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(doc=documents, ascii_only=st.booleans(), spaced=st.booleans())
def test_agrees_with_the_decoded_depth(doc, ascii_only, spaced):
    text = json.dumps(doc, ensure_ascii=ascii_only, indent=1 if spaced else None)
    d = depth(doc)
    for limit in {0, max(d - 1, 0), d, d + 1}:
        assert too_deep(text, limit) == (d > limit), (text, limit, d)
        assert too_deep(text.encode(), limit) == (d > limit)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 65 + "]" * 65,
        '{"a":' * 65 + "1" + "}" * 65,
        "[{" * 33 + "}]" * 33,
        "[" * 100_000,  # never closed
        '["x", ' + "[" * 65 + "]" * 65 + "]",  # deep after a string
        '["\\\\", ' + "[" * 65 + "]" * 65 + "]",  # an escaped backslash ends the string before the brackets
        "[" + "[]," * 10_000 + "[" * 64 + "]" * 64 + "]",  # many shallow arrays, then one too deep
    ],
)
def test_too_deep_is_refused_with_the_given_code(text):
    with pytest.raises(AspenError) as err:
        check_depth(text, code=ErrorCode.BAD_REQUEST)
    assert err.value.code == ErrorCode.BAD_REQUEST
    assert "the limit is 64" in err.value.message and err.value.details == {"max_depth": 64}


@pytest.mark.parametrize(
    "text",
    [
        "[" * 64 + "]" * 64,
        "[" + "[]," * 10_000 + "[" * 63 + "]" * 63 + "]",
        '"' + "[" * 10_000 + '"',  # brackets in a string are text
        '["\\"' + "[" * 10_000 + '"]',  # an escaped quote does not end the string
        '"' + '\\"[' * 10_000,  # an unterminated string: not too deep, not JSON either (the decoder says so)
        "]" * 10_000 + "[" * 10,  # stray closers: malformed, left to the decoder
        json.dumps([{"op": "put", "key": f"k{i}", "value": "[{" * 20} for i in range(5000)]),
        "",
    ],
)
def test_within_the_limit_or_not_json_passes(text):
    check_depth(text)
    check_depth(text.encode())


def test_the_default_code_and_limit():
    with pytest.raises(AspenError) as err:
        check_depth(b"[" * 65)
    assert err.value.code == ErrorCode.VALIDATION_ERROR
    check_depth(b"[" * 3, max_depth=3)
    assert too_deep(b"[" * 4, 3)
