//! The service registry's records and every input check, each failing with
//! its own error (plugin.zig maps them to stable codes; `why` says what).
const std = @import("std");
const aspen = @import("aspen");
const Value = aspen.Value;

pub const prefix = "__service:";
pub const max_name = 128;
pub const max_address = 256;
pub const max_version = 64;
pub const max_tags = 32;
pub const max_tag = 64;
pub const max_metadata = 32;
pub const max_metadata_key = 64;
pub const max_metadata_value = 256;
pub const max_record = 2048; // encoded; keeps 1 000 instances within one reply
pub const min_ttl = 1;
pub const max_ttl = 86_400;
pub const default_ttl = 30;
pub const max_weight = 10_000;
pub const default_weight = 100;
pub const max_limit = 1000;
pub const max_continuation = 2048;
pub const healths = [_][]const u8{ "healthy", "unhealthy", "unknown" };

pub const Fail = error{
    BadRequest,
    NameInvalid,
    InstanceInvalid,
    AddressInvalid,
    VersionInvalid,
    TagsInvalid,
    WeightInvalid,
    MetadataInvalid,
    TtlOutOfRange,
    HealthInvalid,
    RecordTooLarge,
    TokenInvalid,
    LimitInvalid,
    StaleToken,
    NotFound,
    Conflict,
};

/// What the last Fail was about (valid until the export returns).
pub var why: []const u8 = "";

pub fn fail(err: Fail, comptime fmt: []const u8, args: anytype) Fail {
    why = std.fmt.allocPrint(aspen.arena(), fmt, args) catch "";
    return err;
}

/// The stored value of `__service:{service}:{instance}`; the fencing token
/// is the key's create revision, the lease the key's lease.
pub const Record = struct {
    address: []const u8,
    version: []const u8,
    tags: []const []const u8,
    weight: i64,
    metadata: Value,
    health: []const u8,
    ttl: i64,
    registered_ms: i64,
    updated_ms: i64,
};

/// An instance as the registry answers it.
pub const Instance = struct {
    service: []const u8,
    instance: []const u8,
    address: []const u8,
    version: []const u8,
    tags: []const []const u8,
    weight: i64,
    metadata: Value,
    health: []const u8,
    ttl: i64,
    fencing_token: i64,
    registered_ms: i64,
    updated_ms: i64,
};

pub fn instanceOf(service: []const u8, instance: []const u8, r: Record, fencing_token: i64) Instance {
    return .{
        .service = service,
        .instance = instance,
        .address = r.address,
        .version = r.version,
        .tags = r.tags,
        .weight = r.weight,
        .metadata = r.metadata,
        .health = r.health,
        .ttl = r.ttl,
        .fencing_token = fencing_token,
        .registered_ms = r.registered_ms,
        .updated_ms = r.updated_ms,
    };
}

/// A stored record, or null when the value is not one (a key some other
/// writer put under the prefix is skipped, never trusted).
pub fn decodeRecord(stored: []const u8) ?Record {
    return std.json.parseFromSliceLeaky(Record, aspen.arena(), stored, .{ .ignore_unknown_fields = true }) catch null;
}

pub fn encodeRecord(r: Record) ![]const u8 {
    const encoded = try aspen.stringify(r);
    if (encoded.len > max_record) return fail(error.RecordTooLarge, "the instance record is {d} bytes, at most {d}", .{ encoded.len, max_record });
    return encoded;
}

// --- the request body ---------------------------------------------------------

/// The body as an object whose every field is one of `allowed`.
pub fn object(body: Value, allowed: []const []const u8) !std.json.ObjectMap {
    const o = switch (body) {
        .object => |o| o,
        else => return fail(error.BadRequest, "the body must be an object", .{}),
    };
    var it = o.iterator();
    while (it.next()) |e| {
        if (!contains(allowed, e.key_ptr.*)) return fail(error.BadRequest, "unknown field '{s}'", .{clip(e.key_ptr.*)});
    }
    return o;
}

pub fn contains(list: []const []const u8, s: []const u8) bool {
    for (list) |x| if (std.mem.eql(u8, x, s)) return true;
    return false;
}

fn clip(s: []const u8) []const u8 {
    return s[0..@min(s.len, 64)];
}

fn string(v: Value, what: []const u8, err: Fail) ![]const u8 {
    return switch (v) {
        .string => |s| s,
        else => fail(err, "{s} must be a string", .{what}),
    };
}

/// A service or instance name: 1-128 of [A-Za-z0-9._-] (so ':' never splits a key wrongly).
pub fn name(o: std.json.ObjectMap, field: []const u8, err: Fail) ![]const u8 {
    const s = try string(o.get(field) orelse return fail(err, "{s} is required", .{field}), field, err);
    if (s.len == 0 or s.len > max_name) return fail(err, "{s} must be 1-{d} bytes", .{ field, max_name });
    for (s) |c| {
        if (!(std.ascii.isAlphanumeric(c) or c == '.' or c == '_' or c == '-'))
            return fail(err, "{s} must be made of [A-Za-z0-9._-]", .{field});
    }
    return s;
}

/// An optional string of at most `max` bytes (`min` at least).
pub fn text(o: std.json.ObjectMap, field: []const u8, min: usize, max: usize, err: Fail) !?[]const u8 {
    const v = o.get(field) orelse return null;
    if (v == .null) return null;
    const s = try string(v, field, err);
    if (s.len < min or s.len > max) return fail(err, "{s} must be {d}-{d} bytes", .{ field, min, max });
    return s;
}

pub fn integer(o: std.json.ObjectMap, field: []const u8, min: i64, max: i64, err: Fail) !?i64 {
    const v = o.get(field) orelse return null;
    return switch (v) {
        .null => null,
        .integer => |i| if (i < min or i > max) fail(err, "{s} must be {d}..{d}", .{ field, min, max }) else i,
        else => fail(err, "{s} must be an integer {d}..{d}", .{ field, min, max }),
    };
}

pub fn health(o: std.json.ObjectMap) !?[]const u8 {
    const s = (try text(o, "health", 1, 16, error.HealthInvalid)) orelse return null;
    if (!contains(&healths, s)) return fail(error.HealthInvalid, "health must be healthy, unhealthy or unknown", .{});
    return s;
}

pub fn tags(o: std.json.ObjectMap) !?[]const []const u8 {
    const v = o.get("tags") orelse return null;
    const items = switch (v) {
        .null => return null,
        .array => |a| a.items,
        else => return fail(error.TagsInvalid, "tags must be a list of strings", .{}),
    };
    if (items.len > max_tags) return fail(error.TagsInvalid, "{d} tags, at most {d}", .{ items.len, max_tags });
    const out = try aspen.arena().alloc([]const u8, items.len);
    for (items, out) |item, *slot| {
        slot.* = try string(item, "each tag", error.TagsInvalid);
        if (slot.len == 0 or slot.len > max_tag) return fail(error.TagsInvalid, "each tag must be 1-{d} bytes", .{max_tag});
    }
    return out;
}

pub fn metadata(o: std.json.ObjectMap) !?Value {
    const v = o.get("metadata") orelse return null;
    const m = switch (v) {
        .null => return null,
        .object => |m| m,
        else => return fail(error.MetadataInvalid, "metadata must be an object of strings", .{}),
    };
    if (m.count() > max_metadata) return fail(error.MetadataInvalid, "{d} metadata entries, at most {d}", .{ m.count(), max_metadata });
    var it = m.iterator();
    while (it.next()) |e| {
        const key = e.key_ptr.*;
        if (key.len == 0 or key.len > max_metadata_key) return fail(error.MetadataInvalid, "each metadata key must be 1-{d} bytes", .{max_metadata_key});
        const value = try string(e.value_ptr.*, "each metadata value", error.MetadataInvalid);
        if (value.len > max_metadata_value) return fail(error.MetadataInvalid, "each metadata value must be at most {d} bytes", .{max_metadata_value});
    }
    return v;
}

pub fn emptyObject() Value {
    return .{ .object = .empty };
}

/// A fencing token: the create revision the registration answered.
pub fn token(o: std.json.ObjectMap) !i64 {
    return (try integer(o, "fencing_token", 1, std.math.maxInt(i64), error.TokenInvalid)) orelse
        fail(error.TokenInvalid, "fencing_token is required", .{});
}

pub fn limit(o: std.json.ObjectMap, default: i64) !usize {
    return @intCast((try integer(o, "limit", 1, max_limit, error.LimitInvalid)) orelse default);
}

pub fn instanceKey(service: []const u8, instance: []const u8) ![]const u8 {
    return std.fmt.allocPrint(aspen.arena(), prefix ++ "{s}:{s}", .{ service, instance });
}

pub fn servicePrefix(service: []const u8) ![]const u8 {
    return std.fmt.allocPrint(aspen.arena(), prefix ++ "{s}:", .{service});
}
