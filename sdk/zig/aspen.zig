//! Aspen guest SDK for Zig: the Extism kernel imports, Aspen's JSON host
//! functions, and the request/response envelope. Build a plugin with
//! `python -m aspen.plugins.build` (see docs/plugin-abi.md for the ABI).
//!
//! Every export runs with a fresh arena (`aspen.arena()`): allocate freely,
//! the SDK resets it when the export returns.
const std = @import("std");

pub const Value = std.json.Value;

/// Extism kernel functions (module `extism:host/env`). Pointers are offsets
/// into the kernel's memory, not into this module's linear memory.
const env = struct {
    extern "extism:host/env" fn input_length() u64;
    extern "extism:host/env" fn input_load_u8(offset: u64) u8;
    extern "extism:host/env" fn input_load_u64(offset: u64) u64;
    extern "extism:host/env" fn alloc(n: u64) u64;
    extern "extism:host/env" fn length(p: u64) u64;
    extern "extism:host/env" fn load_u8(p: u64) u8;
    extern "extism:host/env" fn load_u64(p: u64) u64;
    extern "extism:host/env" fn store_u8(p: u64, v: u8) void;
    extern "extism:host/env" fn store_u64(p: u64, v: u64) void;
    extern "extism:host/env" fn free(p: u64) void;
    extern "extism:host/env" fn output_set(p: u64, n: u64) void;
    extern "extism:host/env" fn error_set(p: u64) void;
};

/// Aspen host functions (module `extism:host/user`): JSON in, JSON out.
/// Zig only emits the imports a plugin actually uses.
pub const host = struct {
    pub extern "extism:host/user" fn aspen_log(p: u64) u64;
    pub extern "extism:host/user" fn aspen_now_ms(p: u64) u64;
    pub extern "extism:host/user" fn aspen_kv_get(p: u64) u64;
    pub extern "extism:host/user" fn aspen_kv_put(p: u64) u64;
    pub extern "extism:host/user" fn aspen_kv_delete(p: u64) u64;
    pub extern "extism:host/user" fn aspen_kv_scan(p: u64) u64;
    pub extern "extism:host/user" fn aspen_kv_cas(p: u64) u64;
    pub extern "extism:host/user" fn aspen_kv_batch(p: u64) u64;
    pub extern "extism:host/user" fn aspen_kv_transaction(p: u64) u64;
    pub extern "extism:host/user" fn aspen_blob_get(p: u64) u64;
    pub extern "extism:host/user" fn aspen_blob_put(p: u64) u64;
    pub extern "extism:host/user" fn aspen_blob_has(p: u64) u64;
    pub extern "extism:host/user" fn aspen_random_bytes(p: u64) u64;
    pub extern "extism:host/user" fn aspen_node_info(p: u64) u64;
    pub extern "extism:host/user" fn aspen_sign(p: u64) u64;
    pub extern "extism:host/user" fn aspen_verify(p: u64) u64;
    pub extern "extism:host/user" fn aspen_host_api_version(p: u64) u64;
    pub extern "extism:host/user" fn aspen_host_capabilities(p: u64) u64;
    // leases (permission "leases"; helpers in the leases section below)
    pub extern "extism:host/user" fn aspen_lease_grant(p: u64) u64;
    pub extern "extism:host/user" fn aspen_lease_keepalive(p: u64) u64;
    pub extern "extism:host/user" fn aspen_lease_revoke(p: u64) u64;
};

var arena_state = std.heap.ArenaAllocator.init(std.heap.wasm_allocator);

pub fn arena() std.mem.Allocator {
    return arena_state.allocator();
}

/// The code and message of the last host error (valid until the export returns).
pub var last_error_code: []const u8 = "";
pub var last_error_message: []const u8 = "";

// --- moving bytes between this module and the kernel (8 bytes at a time) ---

pub fn input() ![]u8 {
    const n: usize = @intCast(env.input_length());
    const buf = try arena().alloc(u8, n);
    var i: usize = 0;
    while (i + 8 <= n) : (i += 8) std.mem.writeInt(u64, buf[i..][0..8], env.input_load_u64(i), .little);
    while (i < n) : (i += 1) buf[i] = env.input_load_u8(i);
    return buf;
}

fn toKernel(bytes: []const u8) !u64 {
    const p = env.alloc(bytes.len);
    if (p == 0 and bytes.len != 0) return error.OutOfMemory;
    var i: usize = 0;
    while (i + 8 <= bytes.len) : (i += 8) env.store_u64(p + i, std.mem.readInt(u64, bytes[i..][0..8], .little));
    while (i < bytes.len) : (i += 1) env.store_u8(p + i, bytes[i]);
    return p;
}

fn fromKernel(p: u64) ![]u8 {
    const n: usize = @intCast(env.length(p));
    const buf = try arena().alloc(u8, n);
    var i: usize = 0;
    while (i + 8 <= n) : (i += 8) std.mem.writeInt(u64, buf[i..][0..8], env.load_u64(p + i), .little);
    while (i < n) : (i += 1) buf[i] = env.load_u8(p + i);
    return buf;
}

/// Set the export's output (the host reads it after the export returns 0).
pub fn output(bytes: []const u8) void {
    const p = toKernel(bytes) catch return;
    env.output_set(p, bytes.len);
}

/// Fail the export with a message (the host sees a trap-like call error).
pub fn fail(message: []const u8) i32 {
    const p = toKernel(message) catch return 1;
    env.error_set(p);
    return 1;
}

// --- JSON helpers ---------------------------------------------------------

pub fn stringify(v: anytype) error{OutOfMemory}![]u8 {
    return std.json.Stringify.valueAlloc(arena(), v, .{});
}

pub fn parse(bytes: []const u8) !Value {
    return std.json.parseFromSliceLeaky(Value, arena(), bytes, .{});
}

pub fn field(obj: Value, name: []const u8) ?Value {
    return switch (obj) {
        .object => |o| o.get(name),
        else => null,
    };
}

pub fn fieldStr(obj: Value, name: []const u8) ?[]const u8 {
    const v = field(obj, name) orelse return null;
    return switch (v) {
        .string => |s| s,
        else => null,
    };
}

// --- host calls -----------------------------------------------------------

/// Call host function `name` with `args` (any JSON-serialisable value).
/// Returns the `ok` member of the reply; on `{"error": …}` records it in
/// `last_error_code`/`last_error_message` and returns `error.HostError`.
pub fn call(comptime name: []const u8, args: anytype) !Value {
    return callFn(&@field(host, name), args);
}

/// `call` for a host function given by pointer (e.g. one of `hook_host`).
pub fn callFn(f: *const fn (u64) callconv(.c) u64, args: anytype) !Value {
    const answer = try parse(try callRaw(f, try stringify(args)));
    if (field(answer, "error")) |e| {
        last_error_code = fieldStr(e, "code") orelse "INTERNAL";
        last_error_message = fieldStr(e, "message") orelse "";
        return error.HostError;
    }
    return field(answer, "ok") orelse .null;
}

/// Call host function `f` with raw JSON bytes; returns the raw JSON reply.
pub fn callRaw(f: *const fn (u64) callconv(.c) u64, args_json: []const u8) ![]u8 {
    const p = try toKernel(args_json);
    const r = f(p);
    env.free(p);
    const reply_bytes = try fromKernel(r);
    env.free(r);
    return reply_bytes;
}

/// Call a host function chosen at run time (imports every `aspen_*` function).
pub fn callByName(name: []const u8, args_json: []const u8) ![]u8 {
    inline for (comptime std.meta.declarations(host)) |decl| {
        if (std.mem.eql(u8, decl, name)) return callRaw(&@field(host, decl), args_json);
    }
    inline for (comptime std.meta.declarations(hook_host)) |decl| {
        if (std.mem.eql(u8, decl, name)) return callRaw(&@field(hook_host, decl), args_json);
    }
    return error.UnknownHostFunction;
}

pub fn log(level: []const u8, message: []const u8) void {
    _ = call("aspen_log", .{ .level = level, .message = message }) catch {};
}

/// The value of `key` as text, or null when absent (binary values come back
/// as `value_b64` and are decoded here).
pub fn kvGet(key: []const u8) !?[]const u8 {
    const v = try call("aspen_kv_get", .{ .key = key });
    const kv = field(v, "kv") orelse return null;
    if (kv == .null) return null;
    if (fieldStr(kv, "value")) |s| return s;
    const b64 = fieldStr(kv, "value_b64") orelse return error.BadHostReply;
    const dec = std.base64.standard.Decoder;
    const out = try arena().alloc(u8, try dec.calcSizeForSlice(b64));
    try dec.decode(out, b64);
    return out;
}

pub fn kvPut(key: []const u8, value: []const u8) !void {
    _ = try call("aspen_kv_put", .{ .key = key, .value = value });
}

pub fn kvDelete(key: []const u8) !bool {
    const v = try call("aspen_kv_delete", .{ .key = key });
    return (field(v, "deleted") orelse return error.BadHostReply).bool;
}

/// Compare-and-swap: write `new` if the current value is `expected`
/// (null: the key must not exist). True when the swap happened.
pub fn kvCas(key: []const u8, expected: ?[]const u8, new: []const u8) !bool {
    const v = try call("aspen_kv_cas", .{ .key = key, .expected = expected, .new = new });
    return (field(v, "succeeded") orelse return error.BadHostReply).bool;
}

// --- leases (permission "leases") ----------------------------------------
// A plugin only sees leases it granted: any other id is LEASE_NOT_FOUND.

fn intField(v: Value, name: []const u8) !i64 {
    const f = field(v, name) orelse return error.BadHostReply;
    return switch (f) {
        .integer => |i| i,
        else => error.BadHostReply,
    };
}

/// Grant a lease of `ttl` seconds; returns its id.
pub fn leaseGrant(ttl: i64) !i64 {
    return intField(try call("aspen_lease_grant", .{ .ttl = ttl }), "lease_id");
}

/// Renew a lease to its granted TTL; returns that TTL.
pub fn leaseKeepalive(lease_id: i64) !i64 {
    return intField(try call("aspen_lease_keepalive", .{ .lease_id = lease_id }), "ttl");
}

/// Revoke a lease: the keys attached to it are deleted.
pub fn leaseRevoke(lease_id: i64) !void {
    _ = try call("aspen_lease_revoke", .{ .lease_id = lease_id });
}

/// Put `key` attached to `lease_id` (deleted when the lease ends); returns the revision.
pub fn kvPutLease(key: []const u8, value: []const u8, lease_id: i64) !i64 {
    return intField(try call("aspen_kv_put", .{ .key = key, .value = value, .lease = lease_id }), "revision");
}

// --- exports --------------------------------------------------------------

/// What `plugin_info` returns; must match the plugin's plugin.json.
pub const Info = struct {
    name: []const u8,
    version: []const u8,
    handles: []const []const u8,
    priority: u32 = 950,
    app_id: ?[]const u8 = null,
    kv_prefixes: []const []const u8 = &.{},
    description: []const u8 = "",
};

/// Body of a `plugin_info` export.
pub fn exportInfo(info: Info) i32 {
    defer _ = arena_state.reset(.retain_capacity);
    output(stringify(info) catch return fail("out of memory"));
    return 0;
}

/// An incoming request: `{"type": …, "body": {…}, "app": …}`.
pub const Request = struct {
    type: []const u8,
    body: Value,
};

/// An empty JSON object (`.{}` would serialise as `[]`).
pub const empty = struct {}{};

/// A successful reply `{"type": t, "body": body}`.
pub fn reply(type_name: []const u8, body: anytype) ![]const u8 {
    return stringify(.{ .type = type_name, .body = body });
}

/// An error reply; the host turns it into an AspenError with this code.
pub fn replyError(code: []const u8, message: []const u8) ![]const u8 {
    return stringify(.{ .type = "Error", .body = .{ .code = code, .message = message } });
}

/// Body of a `handle_request` export: parses the request, runs `handler`,
/// writes its reply. A Zig error becomes an Error reply: the host's code
/// after `error.HostError`, otherwise `PLUGIN_ERROR` with the error name.
pub fn exportHandler(comptime handler: fn (Request) anyerror![]const u8) i32 {
    defer _ = arena_state.reset(.retain_capacity);
    const out = runHandler(handler) catch |err| blk: {
        const reply_bytes = if (err == error.HostError)
            replyError(last_error_code, last_error_message)
        else
            replyError("PLUGIN_ERROR", @errorName(err));
        break :blk reply_bytes catch return fail("out of memory");
    };
    output(out);
    return 0;
}

fn runHandler(comptime handler: fn (Request) anyerror![]const u8) ![]const u8 {
    const msg = try parse(try input());
    const type_name = fieldStr(msg, "type") orelse return error.MissingType;
    return handler(.{ .type = type_name, .body = field(msg, "body") orelse .null });
}

// --- hooks (docs/plugin-abi.md §3, hook events) ------------------------------

/// The hook host functions (permission `hooks`).
pub const hook_host = struct {
    pub extern "extism:host/user" fn aspen_hook_subscribe(p: u64) u64;
    pub extern "extism:host/user" fn aspen_hook_unsubscribe(p: u64) u64;
    pub extern "extism:host/user" fn aspen_hook_list(p: u64) u64;
};

/// Subscribe to the topics matching `pattern` (`*` one token, `>` the rest);
/// idempotent, so `plugin_init` may call it on every load.
pub fn hookSubscribe(pattern: []const u8) !void {
    _ = try callFn(&hook_host.aspen_hook_subscribe, .{ .pattern = pattern });
}

pub fn hookUnsubscribe(pattern: []const u8) !bool {
    const v = try callFn(&hook_host.aspen_hook_unsubscribe, .{ .pattern = pattern });
    return (field(v, "removed") orelse return error.BadHostReply).bool;
}

/// A delivered hook event: `topic` and its `event` object (for KV topics
/// `key`, `revision`, `version` and, with `kv_read`, `value`/`value_b64`).
pub const HookEvent = struct {
    topic: []const u8,
    event: Value,
};

/// Body of a `plugin_on_hook_event` export: answers `{"ok": true}`, or
/// `{"ok": false, "error"}` when `handler` fails (the node retries, then skips).
pub fn exportHookEvent(comptime handler: fn (HookEvent) anyerror!void) i32 {
    defer _ = arena_state.reset(.retain_capacity);
    const out = if (runHookEvent(handler)) |_|
        stringify(.{ .ok = true })
    else |err|
        stringify(.{ .ok = false, .@"error" = if (err == error.HostError) last_error_code else @errorName(err) });
    output(out catch return fail("out of memory"));
    return 0;
}

fn runHookEvent(comptime handler: fn (HookEvent) anyerror!void) !void {
    const msg = try parse(try input());
    const topic = fieldStr(msg, "topic") orelse return error.MissingTopic;
    return handler(.{ .topic = topic, .event = field(msg, "event") orelse .null });
}

// --- timers (docs/plugin-abi.md §3, "Timers"; permission `timers`) ----------

/// The timer host functions, apart from `host` (so `callByName` does not
/// import them into every plugin that uses it).
pub const timer_host = struct {
    pub extern "extism:host/user" fn aspen_schedule_timer(p: u64) u64;
    pub extern "extism:host/user" fn aspen_cancel_timer(p: u64) u64;
    pub extern "extism:host/user" fn aspen_list_timers(p: u64) u64;
};

/// Like `call`, for a function of `timer_host`.
pub fn timerCall(comptime name: []const u8, args: anytype) !Value {
    const answer = try parse(try callRaw(&@field(timer_host, name), try stringify(args)));
    if (field(answer, "error")) |e| {
        last_error_code = fieldStr(e, "code") orelse "INTERNAL";
        last_error_message = fieldStr(e, "message") orelse "";
        return error.HostError;
    }
    return field(answer, "ok") orelse .null;
}

/// Call a `timer_host` function chosen at run time with raw JSON bytes.
pub fn timerCallByName(name: []const u8, args_json: []const u8) ![]u8 {
    inline for (comptime std.meta.declarations(timer_host)) |decl| {
        if (std.mem.eql(u8, decl, name)) return callRaw(&@field(timer_host, decl), args_json);
    }
    return error.UnknownHostFunction;
}

/// Schedule (or replace) timer `name`; returns when it first fires (wall-clock ms).
pub fn scheduleTimer(name: []const u8, interval_ms: i64, repeating: bool) !i64 {
    const v = try timerCall("aspen_schedule_timer", .{ .name = name, .interval_ms = interval_ms, .repeating = repeating });
    return (field(v, "next_fire_ms") orelse return error.BadHostReply).integer;
}

/// Cancel timer `name`; true when there was one.
pub fn cancelTimer(name: []const u8) !bool {
    const v = try timerCall("aspen_cancel_timer", .{ .name = name });
    return (field(v, "cancelled") orelse return error.BadHostReply).bool;
}

/// Whether the plugin has a timer called `name`.
pub fn hasTimer(name: []const u8) !bool {
    const v = try timerCall("aspen_list_timers", empty);
    const list = field(v, "timers") orelse return error.BadHostReply;
    if (list != .array) return error.BadHostReply;
    for (list.array.items) |t| {
        if (std.mem.eql(u8, fieldStr(t, "name") orelse "", name)) return true;
    }
    return false;
}

/// What `plugin_on_timer` receives.
pub const TimerEvent = struct {
    name: []const u8,
    scheduled_ms: i64,
    fired_ms: i64,
};

/// Body of a `plugin_on_timer` export: runs `handler`, answers `{"ok": true}`,
/// or `{"ok": false, "error"}` with the host's code or the Zig error's name.
pub fn exportTimer(comptime handler: fn (TimerEvent) anyerror!void) i32 {
    defer _ = arena_state.reset(.retain_capacity);
    runTimer(handler) catch |err| {
        const why = if (err == error.HostError) last_error_code else @errorName(err);
        output(stringify(.{ .ok = false, .@"error" = why }) catch return fail("out of memory"));
        return 0;
    };
    output("{\"ok\":true}");
    return 0;
}

fn runTimer(comptime handler: fn (TimerEvent) anyerror!void) !void {
    const msg = try parse(try input());
    const scheduled = field(msg, "scheduled_ms") orelse return error.BadTimerEvent;
    const fired = field(msg, "fired_ms") orelse return error.BadTimerEvent;
    if (scheduled != .integer or fired != .integer) return error.BadTimerEvent;
    try handler(.{
        .name = fieldStr(msg, "name") orelse return error.BadTimerEvent,
        .scheduled_ms = scheduled.integer,
        .fired_ms = fired.integer,
    });
}
