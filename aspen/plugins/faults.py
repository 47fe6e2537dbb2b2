"""What a guest call can go wrong with, as stable error codes: Extism's
failures, output over its limit or not JSON, a call that expired while it
waited. One definition, used by both kinds of worker
(:mod:`aspen.plugins.python_workers`, :mod:`aspen.plugins.native_workers`)
and by the request handler."""

from __future__ import annotations

from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.rpc.nesting import check_depth

FAULT_CODES = frozenset(
    {ErrorCode.PLUGIN_TRAP, ErrorCode.PLUGIN_TIMEOUT, ErrorCode.PLUGIN_OOM, ErrorCode.PLUGIN_BAD_OUTPUT}
)
# Faults after which the instance's state is suspect; BAD_OUTPUT leaves it sound.
INSTANCE_FAULTS = frozenset({ErrorCode.PLUGIN_TRAP, ErrorCode.PLUGIN_TIMEOUT, ErrorCode.PLUGIN_OOM})
MAX_OUTPUT_DEPTH = 64  # nesting of a guest's JSON output, checked before decoding


def classify(plugin: str, export: str, text: str) -> AspenError:
    """Map the text of an Extism call failure to a stable plugin error code."""
    if text == "timeout":
        return AspenError(
            ErrorCode.PLUGIN_TIMEOUT, f"plugin '{plugin}' {export} exceeded its time limit", plugin=plugin
        )
    if text == "oom":
        return AspenError(ErrorCode.PLUGIN_OOM, f"plugin '{plugin}' {export} ran out of memory", plugin=plugin)
    return AspenError(ErrorCode.PLUGIN_TRAP, f"plugin '{plugin}' {export} failed: {text[:500]}", plugin=plugin)


def bad_output(plugin: str, message: str) -> AspenError:
    return AspenError(ErrorCode.PLUGIN_BAD_OUTPUT, f"plugin '{plugin}': {message}", plugin=plugin)


def output_too_large(plugin: str, export: str, size: int, limit: int) -> AspenError:
    return bad_output(plugin, f"{export} output is {size} bytes, the limit is {limit}")


def expired(plugin: str) -> AspenError:
    return AspenError(ErrorCode.TIMEOUT, f"plugin '{plugin}': the request expired while queued")


_decode_json = msgspec.json.Decoder().decode


def check_output_depth(plugin: str, export: str, raw: bytes) -> None:
    """Guest output nested too deep for the decoder is ``PLUGIN_BAD_OUTPUT``."""
    try:
        check_depth(raw, max_depth=MAX_OUTPUT_DEPTH, code=ErrorCode.PLUGIN_BAD_OUTPUT)
    except AspenError as exc:
        raise bad_output(plugin, f"{export} output: {exc.message}") from None


def decode_json_object(plugin: str, export: str, raw: bytes) -> dict[str, Any]:
    check_output_depth(plugin, export, raw)
    try:
        value = _decode_json(raw)
    except msgspec.DecodeError:
        raise bad_output(plugin, f"{export} returned output that is not JSON") from None
    if not isinstance(value, dict):
        raise bad_output(plugin, f"{export} must return a JSON object")
    return value
