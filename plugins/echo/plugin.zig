//! echo: Ping → Pong, Echo returns its body, EchoRead reads a key in the
//! plugin's own namespace (`__plugin:echo:`).
const std = @import("std");
const aspen = @import("aspen");

pub const info = aspen.Info{
    .name = "echo",
    .version = "0.1.0",
    .handles = &.{ "Ping", "Echo", "EchoRead" },
    .priority = 950,
    .description = "Ping/Echo and a read of its own namespace",
};

export fn plugin_info() i32 {
    return aspen.exportInfo(info);
}

export fn handle_request() i32 {
    return aspen.exportHandler(handle);
}

fn handle(req: aspen.Request) ![]const u8 {
    if (std.mem.eql(u8, req.type, "Ping")) return aspen.reply("Pong", aspen.empty);
    if (std.mem.eql(u8, req.type, "Echo")) return aspen.reply("Echo", req.body);
    if (std.mem.eql(u8, req.type, "EchoRead")) {
        const name = aspen.fieldStr(req.body, "key") orelse return aspen.replyError("BAD_REQUEST", "body.key is required");
        const key = try std.fmt.allocPrint(aspen.arena(), "__plugin:echo:{s}", .{name});
        const value = try aspen.kvGet(key);
        return aspen.reply("EchoRead", .{ .key = key, .value = value });
    }
    return aspen.replyError("UNHANDLED", req.type);
}
