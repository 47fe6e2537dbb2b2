//! hostile/noperm: forwards any JSON the test sends to any host function.
//! It holds no permission at all, so every gated function must answer
//! PERMISSION_DENIED.
const std = @import("std");
const aspen = @import("aspen");

pub const info = aspen.Info{
    .name = "noperm",
    .version = "0.1.0",
    .handles = &.{"HostCall"},
    .priority = 990,
    .description = "hostile: raw host calls without any permission",
};

export fn plugin_info() i32 {
    return aspen.exportInfo(info);
}

export fn handle_request() i32 {
    return aspen.exportHandler(handle);
}

/// HostCall {"function": name, "args": {...}} → HostReply <the host's raw reply>
fn handle(req: aspen.Request) ![]const u8 {
    const function = aspen.fieldStr(req.body, "function") orelse return aspen.replyError("BAD_REQUEST", "function");
    const args = if (aspen.field(req.body, "args")) |a| try aspen.stringify(a) else "{}";
    const raw = try aspen.callByName(function, args);
    return std.fmt.allocPrint(aspen.arena(), "{{\"type\":\"HostReply\",\"body\":{s}}}", .{raw});
}
