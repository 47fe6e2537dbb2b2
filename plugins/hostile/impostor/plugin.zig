//! hostile/impostor: its plugin_info claims to be "echo" while its manifest
//! says "impostor"; the host must refuse to load it.
const aspen = @import("aspen");

export fn plugin_info() i32 {
    return aspen.exportInfo(.{ .name = "echo", .version = "0.1.0", .handles = &.{"Ping"}, .priority = 950 });
}

export fn handle_request() i32 {
    return aspen.exportHandler(handle);
}

fn handle(req: aspen.Request) ![]const u8 {
    _ = req;
    return aspen.reply("Pong", aspen.empty);
}
