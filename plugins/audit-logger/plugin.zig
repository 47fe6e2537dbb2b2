//! audit-logger: subscribes (in plugin_init) to `hooks.kv.>` and appends an
//! audit record per committed change under `audited:` to its own namespace,
//! `__plugin:audit-logger:log:{revision}:{key}` = {"topic", "key", "revision",
//! "value"}. Delivery is at least once: a redelivered event rewrites the same
//! record. AuditLoggerStats answers the node's delivery counts (aspen_hook_list).
const std = @import("std");
const aspen = @import("aspen");

pub const info = aspen.Info{
    .name = "audit-logger",
    .version = "0.1.0",
    .handles = &.{"AuditLoggerStats"},
    .kv_prefixes = &.{ "audited:", own },
    .description = "Appends an audit record for every change under audited:",
};

const own = "__plugin:audit-logger:";
const audited = "audited:";

export fn plugin_info() i32 {
    return aspen.exportInfo(info);
}

export fn plugin_init() i32 {
    const reply = if (aspen.hookSubscribe("hooks.kv.>")) |_|
        aspen.stringify(.{ .ok = true })
    else |_|
        aspen.stringify(.{ .ok = false, .@"error" = aspen.last_error_message });
    aspen.output(reply catch return aspen.fail("out of memory"));
    return 0;
}

export fn plugin_on_hook_event() i32 {
    return aspen.exportHookEvent(onEvent);
}

fn onEvent(hook: aspen.HookEvent) !void {
    const key = aspen.fieldStr(hook.event, "key") orelse return error.MissingKey;
    if (!std.mem.startsWith(u8, key, audited)) return; // its own records (and nothing else) are not audited
    const revision = switch (aspen.field(hook.event, "revision") orelse return error.MissingRevision) {
        .integer => |n| n,
        else => return error.BadRevision,
    };
    const record_key = try std.fmt.allocPrint(aspen.arena(), own ++ "log:{d:0>20}:{s}", .{ revision, key });
    const record = try aspen.stringify(.{
        .topic = hook.topic,
        .key = key,
        .revision = revision,
        .value = aspen.fieldStr(hook.event, "value"),
    });
    try aspen.kvPut(record_key, record);
}

export fn handle_request() i32 {
    return aspen.exportHandler(handle);
}

fn handle(req: aspen.Request) ![]const u8 {
    if (!std.mem.eql(u8, req.type, "AuditLoggerStats")) return aspen.replyError("UNHANDLED", req.type);
    const stats = try aspen.callFn(&aspen.hook_host.aspen_hook_list, aspen.empty);
    return aspen.reply("AuditLoggerStats", stats);
}
