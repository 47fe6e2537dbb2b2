//! hostile/snoop: forwards any JSON the test sends to any host function.
//! It holds kv_read and kv_write on its default namespace only, so the
//! tests use it to try every way out of that namespace. HostCallRaw passes
//! the bytes of a string as the argument unparsed (nesting thousands deep,
//! numbers past 64 bits, not JSON at all).
const std = @import("std");
const aspen = @import("aspen");

pub const info = aspen.Info{
    .name = "snoop",
    .version = "0.1.0",
    .handles = &.{ "HostCall", "HostCallRaw" },
    .priority = 990,
    .description = "hostile: raw host calls for namespace-escape tests",
};

export fn plugin_info() i32 {
    return aspen.exportInfo(info);
}

export fn handle_request() i32 {
    return aspen.exportHandler(handle);
}

/// HostCall {"function": name, "args": {...}} → HostReply <the host's raw reply>
/// HostCallRaw {"function": name, "raw": "argument bytes"} → HostReply <the host's raw reply>
fn handle(req: aspen.Request) ![]const u8 {
    const function = aspen.fieldStr(req.body, "function") orelse return aspen.replyError("BAD_REQUEST", "function");
    const args = if (std.mem.eql(u8, req.type, "HostCallRaw"))
        aspen.fieldStr(req.body, "raw") orelse return aspen.replyError("BAD_REQUEST", "raw")
    else if (aspen.field(req.body, "args")) |a| try aspen.stringify(a) else "{}";
    const raw = aspen.callByName(function, args) catch |err| switch (err) {
        error.UnknownHostFunction => try aspen.timerCallByName(function, args),
        else => return err,
    };
    return std.fmt.allocPrint(aspen.arena(), "{{\"type\":\"HostReply\",\"body\":{s}}}", .{raw});
}
