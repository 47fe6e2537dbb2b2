"""A loaded WASM plugin as a :class:`~aspen.rpc.handler.RequestHandler`,
so the ``HandlerRegistry`` routes to it like to any native handler
(priority 900–999, request types from the manifest's ``handles``)."""

from __future__ import annotations

from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.faults import bad_output, check_output_depth, decode_json_object
from aspen.plugins.manifest import PluginManifest
from aspen.plugins.runtime import PluginRuntime
from aspen.rpc.handler import Request, RequestContext, Response

_encode = msgspec.json.Encoder().encode
MAX_ERROR_CODE_CHARS = 64


class _Reply(msgspec.Struct):
    """What ``handle_request`` must return; unknown fields are ignored."""

    type: str
    body: dict[str, Any] = {}


_decode_reply = msgspec.json.Decoder(_Reply).decode

# event -> the export that takes it (process plugins: the method without "plugin_")
CALLBACKS = {"timer": "plugin_on_timer", "hook_event": "plugin_on_hook_event"}


class WasmPluginHandler:
    keeps_deadline = True  # the runtime answers TIMEOUT itself: no registry timer

    def __init__(self, manifest: PluginManifest, runtime: PluginRuntime) -> None:
        self.manifest = manifest
        self.runtime = runtime
        self.name = manifest.name
        self.request_types = frozenset(manifest.handles)
        self.public_types = frozenset(manifest.public)  # no plugin:call needed (aspen.rpc.access)
        self.priority = manifest.priority
        self.app_id = manifest.app_id  # the registry maps request types to it

    def can_handle(self, request: Request) -> bool:
        return request.type in self.request_types

    def _decode(self, raw: bytes) -> Response:
        """Runs on the worker thread: anything but ``{"type": str, "body": {...}}``
        is ``PLUGIN_BAD_OUTPUT``."""
        check_output_depth(self.name, "handle_request", raw)
        try:
            reply = _decode_reply(raw)
        except msgspec.ValidationError:
            reply = None
        except msgspec.DecodeError:
            raise bad_output(self.name, "handle_request returned output that is not JSON") from None
        if reply is None or not reply.type:
            raise bad_output(self.name, 'handle_request must return {"type": string, "body": object}')
        if reply.type == "Error":
            code = reply.body.get("code")
            if not isinstance(code, str) or not 0 < len(code) <= MAX_ERROR_CODE_CHARS:
                raise bad_output(self.name, "an Error reply needs a string code")
        return Response(reply.type, reply.body)

    async def handle(self, request: Request, ctx: RequestContext) -> Response:
        if request.type not in self.request_types:
            raise AspenError(ErrorCode.UNKNOWN_REQUEST, f"plugin '{self.name}' does not handle {request.type}")
        message: dict[str, Any] = {"type": request.type, "body": request.body, "app": request.app}
        if ctx.caller is not None:
            message["caller"] = ctx.caller
        try:
            payload = _encode(message)
        except (TypeError, msgspec.EncodeError) as exc:
            raise AspenError(ErrorCode.BAD_REQUEST, f"request body is not JSON-serialisable: {exc}") from exc
        except RecursionError:  # only in-process: over RPC the envelope's depth check refused it first
            raise AspenError(ErrorCode.VALIDATION_ERROR, "request body nests too deep to encode") from None
        response = await self.runtime.call("handle_request", payload, self._decode, deadline=ctx.deadline)
        if response.type == "Error":
            body = response.body
            raise AspenError(str(body["code"]), str(body.get("message", "")), plugin=self.name)
        return response

    async def notify(self, event: str, payload: dict[str, Any], *, deadline: float | None = None) -> bool:
        """Hand a timer firing or a hook event to the plugin's callback
        (``CALLBACKS``); False when it has none. An answer ``{"ok": false,
        "error"}`` is ``PLUGIN_CALLBACK_FAILED``; a trap, timeout or bad
        output keeps its own code. Runs like a request: only while the
        plugin serves, under its limits, on its workers."""
        export = CALLBACKS[event]
        if not self.runtime.has_export(export):
            return False
        out = await self.runtime.call(
            export, _encode(payload), lambda raw: decode_json_object(self.name, export, raw), deadline=deadline
        )
        if out.get("ok") is False:
            why = str(out.get("error", ""))[:500]
            raise AspenError(
                ErrorCode.PLUGIN_CALLBACK_FAILED, f"plugin '{self.name}' {export} failed: {why}", plugin=self.name
            )
        return True
