//! hostile/ticker: the timer tests' plugin. TickerCall hands any argument to
//! a timer host function; every `plugin_on_timer` appends a record
//! `__plugin:ticker:fired:{timer}:{fired_ms}:{node_id}`, then does what the
//! test left for that timer in its namespace: `then:{timer}` holds the
//! arguments of an `aspen_schedule_timer` call to make from the callback,
//! `fail:{timer}` makes the callback answer `{"ok": false}`.
const std = @import("std");
const aspen = @import("aspen");

pub const info = aspen.Info{
    .name = "ticker",
    .version = "0.1.0",
    .handles = &.{"TickerCall"},
    .priority = 985,
    .description = "test: raw timer host calls, and a KV record per timer firing",
};

const ns = "__plugin:ticker:";

export fn plugin_info() i32 {
    return aspen.exportInfo(info);
}

export fn handle_request() i32 {
    return aspen.exportHandler(handle);
}

export fn plugin_on_timer() i32 {
    return aspen.exportTimer(onTimer);
}

/// TickerCall {"function": name, "raw": "argument bytes"} or {"function", "args": {...}}
/// → HostReply <the host's raw reply>
fn handle(req: aspen.Request) ![]const u8 {
    const function = aspen.fieldStr(req.body, "function") orelse return aspen.replyError("BAD_REQUEST", "function");
    const args = if (aspen.fieldStr(req.body, "raw")) |r| r else if (aspen.field(req.body, "args")) |a| try aspen.stringify(a) else "{}";
    const raw = try aspen.timerCallByName(function, args);
    return std.fmt.allocPrint(aspen.arena(), "{{\"type\":\"HostReply\",\"body\":{s}}}", .{raw});
}

fn onTimer(ev: aspen.TimerEvent) !void {
    const node = aspen.fieldStr(try aspen.call("aspen_node_info", aspen.empty), "node_id") orelse "?";
    const a = aspen.arena();
    const key = try std.fmt.allocPrint(a, ns ++ "fired:{s}:{d}:{s}", .{ ev.name, ev.fired_ms, node });
    try aspen.kvPut(key, try aspen.stringify(.{ .name = ev.name, .scheduled_ms = ev.scheduled_ms, .fired_ms = ev.fired_ms, .node = node }));
    if (try aspen.kvGet(try std.fmt.allocPrint(a, ns ++ "then:{s}", .{ev.name}))) |args| {
        const reply = try aspen.timerCallByName("aspen_schedule_timer", args);
        try aspen.kvPut(try std.fmt.allocPrint(a, ns ++ "then-reply:{s}", .{ev.name}), reply);
    }
    if (try aspen.kvGet(try std.fmt.allocPrint(a, ns ++ "fail:{s}", .{ev.name})) != null) return error.AskedToFail;
}
