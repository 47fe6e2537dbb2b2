//! The KV calls the registry makes, as entries with the metadata it relies
//! on: the create revision (the fencing token), the mod revision (for
//! compare-and-put) and the lease.
const std = @import("std");
const aspen = @import("aspen");
const Value = aspen.Value;

pub const Entry = struct {
    key: []const u8,
    value: ?[]const u8, // null: not text, so not a record of ours
    create_revision: i64,
    mod_revision: i64,
    lease: i64,
};

fn int(v: Value, name: []const u8) i64 {
    const f = aspen.field(v, name) orelse return 0;
    return switch (f) {
        .integer => |i| i,
        else => 0,
    };
}

pub fn entryOf(kv: Value) ?Entry {
    return .{
        .key = aspen.fieldStr(kv, "key") orelse return null,
        .value = aspen.fieldStr(kv, "value"),
        .create_revision = int(kv, "create_revision"),
        .mod_revision = int(kv, "mod_revision"),
        .lease = int(kv, "lease"),
    };
}

pub fn get(key: []const u8) !?Entry {
    const v = try aspen.call("aspen_kv_get", .{ .key = key });
    const kv = aspen.field(v, "kv") orelse return null;
    if (kv == .null) return null;
    return entryOf(kv);
}

pub fn nowMs() !i64 {
    return int(try aspen.call("aspen_now_ms", aspen.empty), "now_ms");
}

/// True when the last host error had this code.
pub fn hostCode(err: anyerror, code: []const u8) bool {
    return err == error.HostError and std.mem.eql(u8, aspen.last_error_code, code);
}

/// Revoke `lease`, keeping the host error of the call that failed first.
pub fn revokeQuietly(lease: i64) void {
    const code = aspen.last_error_code;
    const message = aspen.last_error_message;
    aspen.leaseRevoke(lease) catch {};
    aspen.last_error_code = code;
    aspen.last_error_message = message;
}

/// Put `value` at `key` on `lease` if the key does not exist; the revision
/// of the write (the new key's create revision), or null when it existed.
pub fn create(key: []const u8, value: []const u8, lease: i64) !?i64 {
    const r = try aspen.call("aspen_kv_transaction", .{
        .compares = .{.{ .key = key, .target = "exists", .op = "==", .value = false }},
        .success = .{.{ .op = "put", .key = key, .value = value, .lease = lease }},
    });
    if (!succeeded(r)) return null;
    return int(r, "revision");
}

/// Put `value` at `key` on `lease` if the key is still at `mod_revision`.
pub fn replace(key: []const u8, value: []const u8, lease: i64, mod_revision: i64) !bool {
    const r = try aspen.call("aspen_kv_transaction", .{
        .compares = .{.{ .key = key, .target = "mod_revision", .op = "==", .value = mod_revision }},
        .success = .{.{ .op = "put", .key = key, .value = value, .lease = lease }},
    });
    return succeeded(r);
}

/// Delete `key` if it is still at `mod_revision`.
pub fn deleteAt(key: []const u8, mod_revision: i64) !bool {
    const r = try aspen.call("aspen_kv_transaction", .{
        .compares = .{.{ .key = key, .target = "mod_revision", .op = "==", .value = mod_revision }},
        .success = .{.{ .op = "delete", .key = key }},
    });
    return succeeded(r);
}

fn succeeded(r: Value) bool {
    const s = aspen.field(r, "succeeded") orelse return false;
    return s == .bool and s.bool;
}

pub const Page = struct {
    entries: []const Value,
    is_truncated: bool,
    continuation: ?[]const u8,
};

pub fn scan(prefix: []const u8, limit: usize, continuation: ?[]const u8) !Page {
    const r = try aspen.call("aspen_kv_scan", .{ .prefix = prefix, .limit = limit, .continuation = continuation });
    const entries = aspen.field(r, "entries") orelse return error.BadHostReply;
    const t = aspen.field(r, "is_truncated") orelse return error.BadHostReply;
    return .{
        .entries = if (entries == .array) entries.array.items else return error.BadHostReply,
        .is_truncated = t == .bool and t.bool,
        .continuation = aspen.fieldStr(r, "continuation"),
    };
}

/// A scan continuation that resumes right after `key` (the host's token:
/// the last key, URL-safe base64).
pub fn after(key: []const u8) ![]const u8 {
    const enc = std.base64.url_safe.Encoder;
    const out = try aspen.arena().alloc(u8, enc.calcSize(key.len));
    return enc.encode(out, key);
}
