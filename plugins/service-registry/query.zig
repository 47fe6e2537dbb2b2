//! Reads: discover (filtered by health, tags and version prefix, at most
//! 1 000 instances and 1 000 keys scanned per call, resumable), list of
//! services and one instance.
const std = @import("std");
const aspen = @import("aspen");
const in = @import("input.zig");
const store = @import("store.zig");

const page_size = 100;
const max_scanned = 1000; // per call: a filter that matches little answers truncated, with a continuation

const Filter = struct {
    health: ?[]const u8,
    tags: []const []const u8,
    version_prefix: []const u8,

    fn matches(f: Filter, r: in.Instance) bool {
        if (f.health) |h| if (!std.mem.eql(u8, h, r.health)) return false;
        if (!std.mem.startsWith(u8, r.version, f.version_prefix)) return false;
        for (f.tags) |t| if (!in.contains(r.tags, t)) return false;
        return true;
    }
};

/// The instance named by `key` under `svc_prefix` with its record, or null
/// when the entry is not a record of ours.
fn decode(service: []const u8, svc_prefix: []const u8, kv: aspen.Value) ?in.Instance {
    const e = store.entryOf(kv) orelse return null;
    const rec = in.decodeRecord(e.value orelse return null) orelse return null;
    if (!std.mem.startsWith(u8, e.key, svc_prefix)) return null;
    return in.instanceOf(service, e.key[svc_prefix.len..], rec, e.create_revision);
}

pub fn discover(body: aspen.Value) ![]const u8 {
    const o = try in.object(body, &.{ "service", "health", "tags", "version_prefix", "limit", "continuation" });
    const service = try in.name(o, "service", error.NameInvalid);
    const filter = Filter{
        .health = try in.health(o),
        .tags = (try in.tags(o)) orelse &.{},
        .version_prefix = (try in.text(o, "version_prefix", 0, in.max_version, error.VersionInvalid)) orelse "",
    };
    const limit = try in.limit(o, in.max_limit);
    var continuation = try in.text(o, "continuation", 1, in.max_continuation, error.BadRequest);
    const svc_prefix = try in.servicePrefix(service);
    var found: std.ArrayList(in.Instance) = .empty;
    var scanned: usize = 0;
    var truncated = false;
    outer: while (true) {
        const page = try store.scan(svc_prefix, page_size, continuation);
        for (page.entries, 0..) |kv, i| {
            scanned += 1;
            if (decode(service, svc_prefix, kv)) |inst| {
                if (filter.matches(inst)) try found.append(aspen.arena(), inst);
            }
            const last = i + 1 == page.entries.len;
            if (found.items.len == limit or scanned >= max_scanned) {
                truncated = !last or page.is_truncated;
                continuation = if (truncated) try store.after(aspen.fieldStr(kv, "key") orelse "") else null;
                break :outer;
            }
        }
        if (!page.is_truncated or page.continuation == null) {
            continuation = null;
            break;
        }
        continuation = page.continuation;
    }
    return aspen.reply("ServiceDiscoverResult", .{
        .service = service,
        .instances = found.items,
        .truncated = truncated,
        .continuation = continuation,
    });
}

/// Service names, in order: one single-key scan per service, each resuming
/// after every key of the one before (`{service};` sorts after `{service}:…`).
pub fn list(body: aspen.Value) ![]const u8 {
    const o = try in.object(body, &.{"limit"});
    const limit = try in.limit(o, in.max_limit);
    var names: std.ArrayList([]const u8) = .empty;
    var continuation: ?[]const u8 = null;
    var steps: usize = 0;
    var truncated = false;
    while (true) : (steps += 1) {
        const page = try store.scan(in.prefix, 1, continuation);
        if (page.entries.len == 0) break;
        const key = aspen.fieldStr(page.entries[0], "key") orelse return error.BadHostReply;
        if (names.items.len == limit or steps >= 2 * in.max_limit) {
            truncated = true;
            break;
        }
        const rest = key[in.prefix.len..];
        if (std.mem.indexOfScalar(u8, rest, ':')) |colon| {
            try names.append(aspen.arena(), rest[0..colon]);
            continuation = try store.after(try std.fmt.allocPrint(aspen.arena(), "{s};", .{key[0 .. in.prefix.len + colon]}));
        } else {
            continuation = try store.after(key); // not an instance key: step over it
        }
    }
    return aspen.reply("ServiceListResult", .{ .services = names.items, .truncated = truncated });
}

pub fn get(body: aspen.Value) ![]const u8 {
    const o = try in.object(body, &.{ "service", "instance" });
    const service = try in.name(o, "service", error.NameInvalid);
    const instance = try in.name(o, "instance", error.InstanceInvalid);
    const e = (try store.get(try in.instanceKey(service, instance))) orelse
        return in.fail(error.NotFound, "no instance {s} of service {s}", .{ instance, service });
    const rec = in.decodeRecord(e.value orelse "") orelse
        return in.fail(error.NotFound, "instance {s} holds no registry record", .{instance});
    return aspen.reply("ServiceInstance", in.instanceOf(service, instance, rec, e.create_revision));
}
