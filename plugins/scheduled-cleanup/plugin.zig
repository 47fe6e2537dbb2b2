//! scheduled-cleanup: entries under `expiring:` whose value is a JSON object
//! with `expires_at_ms` (wall-clock ms) are deleted once that time has
//! passed, by the repeating timer `sweep` (every minute unless
//! CleanupSchedule {"interval_ms"} says otherwise). Other values are kept.
//! An entry rewritten while a sweep runs is kept: each delete is a
//! transaction on the revision the sweep read.
const std = @import("std");
const aspen = @import("aspen");

pub const info = aspen.Info{
    .name = "scheduled-cleanup",
    .version = "0.1.0",
    .handles = &.{"CleanupSchedule"},
    .priority = 945,
    .kv_prefixes = &.{"expiring:"},
    .description = "Deletes entries under expiring: whose expires_at_ms has passed, on a repeating timer",
};

const prefix = "expiring:";
const timer = "sweep";
const default_interval_ms = 60_000;
const page_size = 100;
const max_pages = 20; // per sweep: the rest waits for the next one

export fn plugin_info() i32 {
    return aspen.exportInfo(info);
}

/// The sweep is scheduled by the first load anywhere; later loads (other
/// nodes, upgrades) keep the schedule they find.
export fn plugin_init() i32 {
    const scheduled = aspen.hasTimer(timer) catch false;
    if (!scheduled) _ = aspen.scheduleTimer(timer, default_interval_ms, true) catch {
        aspen.output("{\"ok\":false,\"error\":\"cannot schedule the sweep\"}");
        return 0;
    };
    aspen.output("{\"ok\":true}");
    return 0;
}

export fn handle_request() i32 {
    return aspen.exportHandler(handle);
}

export fn plugin_on_timer() i32 {
    return aspen.exportTimer(sweep);
}

/// CleanupSchedule {"interval_ms"?} → CleanupSchedule {"next_fire_ms"}
fn handle(req: aspen.Request) ![]const u8 {
    if (!std.mem.eql(u8, req.type, "CleanupSchedule")) return aspen.replyError("UNHANDLED", req.type);
    var interval: i64 = default_interval_ms;
    if (aspen.field(req.body, "interval_ms")) |v| {
        if (v != .integer) return aspen.replyError("BAD_REQUEST", "interval_ms must be an integer");
        interval = v.integer;
    }
    return aspen.reply("CleanupSchedule", .{ .next_fire_ms = try aspen.scheduleTimer(timer, interval, true) });
}

fn expiresAt(value: []const u8) ?i64 {
    const doc = aspen.parse(value) catch return null;
    const at = aspen.field(doc, "expires_at_ms") orelse return null;
    return if (at == .integer) at.integer else null;
}

fn sweep(ev: aspen.TimerEvent) !void {
    if (!std.mem.eql(u8, ev.name, timer)) return;
    var continuation: ?[]const u8 = null;
    var deleted: usize = 0;
    var pages: usize = 0;
    while (pages < max_pages) : (pages += 1) {
        const page = try aspen.call("aspen_kv_scan", .{ .prefix = prefix, .limit = page_size, .continuation = continuation });
        const entries = aspen.field(page, "entries") orelse return error.BadHostReply;
        if (entries != .array) return error.BadHostReply;
        for (entries.array.items) |entry| {
            const key = aspen.fieldStr(entry, "key") orelse continue;
            const at = expiresAt(aspen.fieldStr(entry, "value") orelse continue) orelse continue;
            const revision = aspen.field(entry, "mod_revision") orelse continue;
            if (at > ev.fired_ms or revision != .integer) continue;
            const done = try aspen.call("aspen_kv_transaction", .{
                .compares = .{.{ .key = key, .target = "mod_revision", .op = "==", .value = revision.integer }},
                .success = .{.{ .op = "delete", .key = key }},
            });
            if ((aspen.field(done, "succeeded") orelse continue) == .bool and aspen.field(done, "succeeded").?.bool) deleted += 1;
        }
        const more = aspen.field(page, "is_truncated") orelse break;
        if (more != .bool or !more.bool) break;
        continuation = aspen.fieldStr(page, "continuation") orelse break;
    }
    if (deleted > 0) {
        aspen.log("info", try std.fmt.allocPrint(aspen.arena(), "deleted {d} expired entries", .{deleted}));
    }
}
