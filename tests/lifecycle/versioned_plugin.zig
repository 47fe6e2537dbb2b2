//! The plugin the lifecycle tests upgrade and roll back: every reply names
//! the version that produced it, so a test can tell old from new. The tests
//! compile it once per (version, init_ok) with these two constants replaced.
const std = @import("std");
const aspen = @import("aspen");

const version = "0.0.0";
const init_ok = true;

pub const info = aspen.Info{
    .name = "vers",
    .version = version,
    .handles = &.{"VersionEcho"},
    .priority = 950,
    .description = "answers with its own version",
};

export fn plugin_info() i32 {
    return aspen.exportInfo(info);
}

export fn plugin_init() i32 {
    aspen.output(if (init_ok) "{\"ok\":true}" else "{\"ok\":false,\"error\":\"refusing to start\"}");
    return 0;
}

export fn handle_request() i32 {
    return aspen.exportHandler(handle);
}

fn handle(req: aspen.Request) ![]const u8 {
    const seq = aspen.field(req.body, "seq") orelse .null;
    // `hold_ms` keeps the call busy that long: the in-flight and latency tests need a slow call.
    if (aspen.field(req.body, "hold_ms")) |h| switch (h) {
        .integer => |ms| try hold(ms),
        else => {},
    };
    return aspen.reply("VersionEchoResult", .{ .version = version, .seq = seq, .served_by = info.name });
}

fn nowMs() !i64 {
    const answer = try aspen.call("aspen_now_ms", struct {}{});
    return switch (aspen.field(answer, "now_ms") orelse .null) {
        .integer => |n| n,
        else => error.BadClock,
    };
}

fn hold(ms: i64) !void {
    const until = (try nowMs()) + ms;
    var spins: u64 = 0;
    while ((try nowMs()) < until) {
        var i: u32 = 0;
        // Spin between clock reads: each host call allocates in the call's arena.
        while (i < 1_000_000) : (i += 1) {
            spins +%= i;
            std.mem.doNotOptimizeAway(spins);
        }
    }
}
