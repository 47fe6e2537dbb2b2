//! kv-counter: named counters under `counter:`, incremented with
//! compare-and-swap so concurrent increments never lose an update.
const std = @import("std");
const aspen = @import("aspen");

pub const info = aspen.Info{
    .name = "kv-counter",
    .version = "0.1.0",
    .handles = &.{ "KvCounterIncrement", "KvCounterGet", "KvCounterReset" },
    .priority = 940,
    .kv_prefixes = &.{"counter:"},
    .description = "Counters in KV, incremented with compare-and-swap",
};

const max_attempts = 64;

export fn plugin_info() i32 {
    return aspen.exportInfo(info);
}

export fn handle_request() i32 {
    return aspen.exportHandler(handle);
}

fn counterKey(req: aspen.Request) ![]const u8 {
    const name = aspen.fieldStr(req.body, "name") orelse return error.MissingName;
    return std.fmt.allocPrint(aspen.arena(), "counter:{s}", .{name});
}

fn handle(req: aspen.Request) ![]const u8 {
    if (aspen.fieldStr(req.body, "name") == null) return aspen.replyError("BAD_REQUEST", "body.name is required");
    const key = try counterKey(req);
    if (std.mem.eql(u8, req.type, "KvCounterGet")) {
        const current = try aspen.kvGet(key);
        const value = if (current) |text| try std.fmt.parseInt(i64, text, 10) else 0;
        return aspen.reply("Counter", .{ .key = key, .value = value });
    }
    if (std.mem.eql(u8, req.type, "KvCounterReset")) {
        return aspen.reply("KvCounterReset", .{ .key = key, .existed = try aspen.kvDelete(key) });
    }
    if (std.mem.eql(u8, req.type, "KvCounterIncrement")) {
        var attempt: usize = 0;
        while (attempt < max_attempts) : (attempt += 1) {
            const current = try aspen.kvGet(key);
            const value = if (current) |text| try std.fmt.parseInt(i64, text, 10) else 0;
            const next = try std.fmt.allocPrint(aspen.arena(), "{d}", .{value + 1});
            if (try aspen.kvCas(key, current, next)) {
                return aspen.reply("Counter", .{ .key = key, .value = value + 1, .attempts = attempt + 1 });
            }
        }
        return aspen.replyError("CONFLICT", "too much contention on the counter");
    }
    return aspen.replyError("UNHANDLED", req.type);
}
