//! hostile/faults: every way a guest can fail at run time. Spin loops
//! forever, MemBomb allocates until memory runs out, BigOutput returns
//! {"mib": n} MiB, NotJson returns text, DeepOutput returns a reply nested
//! {"depth": n} arrays deep, Trap executes `unreachable`, Fine
//! answers normally (to show the plugin and the node keep serving). It also
//! exports every optional lifecycle function.
const std = @import("std");
const aspen = @import("aspen");

pub const info = aspen.Info{
    .name = "faults",
    .version = "0.1.0",
    .handles = &.{ "Spin", "MemBomb", "BigOutput", "NotJson", "DeepOutput", "Trap", "Fine" },
    .priority = 990,
    .description = "hostile: loops, memory bombs, bad output, traps",
};

var sink: u64 = 0;

export fn plugin_info() i32 {
    return aspen.exportInfo(info);
}

export fn plugin_init() i32 {
    aspen.log("info", "faults initialised");
    aspen.output("{\"ok\":true}");
    return 0;
}

export fn plugin_shutdown() i32 {
    aspen.log("info", "faults shutting down");
    aspen.output("{\"ok\":true}");
    return 0;
}

export fn plugin_health() i32 {
    aspen.output("{\"ok\":true}");
    return 0;
}

export fn handle_request() i32 {
    return aspen.exportHandler(handle);
}

fn eql(a: []const u8, b: []const u8) bool {
    return std.mem.eql(u8, a, b);
}

fn handle(req: aspen.Request) ![]const u8 {
    if (eql(req.type, "Spin")) {
        var i: u64 = 0;
        while (true) : (i +%= 1) @as(*volatile u64, &sink).* = i;
    }
    if (eql(req.type, "MemBomb")) {
        while (true) {
            const block = try std.heap.wasm_allocator.alloc(u8, 1 << 20);
            @as(*volatile u8, &block[block.len - 1]).* = 1;
        }
    }
    if (eql(req.type, "BigOutput")) {
        const mib: usize = if (aspen.field(req.body, "mib")) |v| @intCast(v.integer) else 2;
        const block = try aspen.arena().alloc(u8, mib << 20);
        @memset(block, ' ');
        return block;
    }
    if (eql(req.type, "NotJson")) return "this is not JSON";
    if (eql(req.type, "DeepOutput")) {
        const depth: usize = if (aspen.field(req.body, "depth")) |v| @intCast(v.integer) else 10_000;
        const head = "{\"type\":\"Deep\",\"body\":{\"v\":";
        const out = try aspen.arena().alloc(u8, head.len + 2 * depth + 2);
        @memcpy(out[0..head.len], head);
        @memset(out[head.len .. head.len + depth], '[');
        @memset(out[head.len + depth .. head.len + 2 * depth], ']');
        @memcpy(out[head.len + 2 * depth ..], "}}");
        return out;
    }
    if (eql(req.type, "Trap")) @trap();
    if (eql(req.type, "Fine")) return aspen.reply("Fine", aspen.empty);
    return aspen.replyError("UNHANDLED", req.type);
}
