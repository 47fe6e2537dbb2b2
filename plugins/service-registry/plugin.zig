//! service-registry: instances of services under `__service:{service}:{instance}`,
//! each on a lease of its TTL, so an instance whose heartbeats stop is gone
//! within its TTL. The fencing token of a registration is its key's create
//! revision: every (re-)registration creates the key anew, so tokens only
//! grow, and heartbeat, deregister and updates must present the current one.
//! Layout and codes: docs/service-registry.md.
const std = @import("std");
const aspen = @import("aspen");
const in = @import("input.zig");
const store = @import("store.zig");
const query = @import("query.zig");

pub const info = aspen.Info{
    .name = "service-registry",
    .version = "0.1.0",
    .handles = &.{
        "ServiceRegister",   "ServiceDeregister",   "ServiceDiscover",       "ServiceList",
        "ServiceGetInstance", "ServiceHeartbeat", "ServiceUpdateHealth", "ServiceUpdateMetadata",
    },
    .priority = 950,
    .app_id = "service-registry",
    .kv_prefixes = &.{in.prefix},
    .description = "Service registry: instances on leases, fencing tokens, discovery by health, tags and version",
};

const max_attempts = 16;

export fn plugin_info() i32 {
    return aspen.exportInfo(info);
}

export fn handle_request() i32 {
    return aspen.exportHandler(handle);
}

fn handle(req: aspen.Request) ![]const u8 {
    return route(req) catch |err| aspen.replyError(switch (err) {
        error.BadRequest => "BAD_REQUEST",
        error.NameInvalid => "SERVICE_NAME_INVALID",
        error.InstanceInvalid => "SERVICE_INSTANCE_INVALID",
        error.AddressInvalid => "SERVICE_ADDRESS_INVALID",
        error.VersionInvalid => "SERVICE_VERSION_INVALID",
        error.TagsInvalid => "SERVICE_TAGS_INVALID",
        error.WeightInvalid => "SERVICE_WEIGHT_INVALID",
        error.MetadataInvalid => "SERVICE_METADATA_INVALID",
        error.TtlOutOfRange => "SERVICE_TTL_OUT_OF_RANGE",
        error.HealthInvalid => "SERVICE_HEALTH_INVALID",
        error.RecordTooLarge => "SERVICE_RECORD_TOO_LARGE",
        error.TokenInvalid => "SERVICE_TOKEN_INVALID",
        error.LimitInvalid => "SERVICE_LIMIT_INVALID",
        error.StaleToken => "SERVICE_STALE_TOKEN",
        error.NotFound => "SERVICE_NOT_FOUND",
        error.Conflict => "SERVICE_CONFLICT",
        else => return err, // host errors keep the host's code
    }, in.why);
}

fn route(req: aspen.Request) ![]const u8 {
    const t = req.type;
    if (eq(t, "ServiceRegister")) return register(req.body);
    if (eq(t, "ServiceHeartbeat")) return heartbeat(req.body);
    if (eq(t, "ServiceDeregister")) return deregister(req.body);
    if (eq(t, "ServiceUpdateHealth")) return update(req.body, true);
    if (eq(t, "ServiceUpdateMetadata")) return update(req.body, false);
    if (eq(t, "ServiceDiscover")) return query.discover(req.body);
    if (eq(t, "ServiceList")) return query.list(req.body);
    if (eq(t, "ServiceGetInstance")) return query.get(req.body);
    return aspen.replyError("UNHANDLED", req.type);
}

fn eq(a: []const u8, b: []const u8) bool {
    return std.mem.eql(u8, a, b);
}

const Target = struct { service: []const u8, instance: []const u8, key: []const u8 };

fn target(o: std.json.ObjectMap) !Target {
    const service = try in.name(o, "service", error.NameInvalid);
    const instance = try in.name(o, "instance", error.InstanceInvalid);
    return .{ .service = service, .instance = instance, .key = try in.instanceKey(service, instance) };
}

fn register(body: aspen.Value) ![]const u8 {
    const o = try in.object(body, &.{ "service", "instance", "address", "version", "tags", "weight", "metadata", "health", "ttl" });
    const at = try target(o);
    const now = try store.nowMs();
    const rec = in.Record{
        .address = (try in.text(o, "address", 1, in.max_address, error.AddressInvalid)) orelse
            return in.fail(error.AddressInvalid, "address is required", .{}),
        .version = (try in.text(o, "version", 0, in.max_version, error.VersionInvalid)) orelse "",
        .tags = (try in.tags(o)) orelse &.{},
        .weight = (try in.integer(o, "weight", 0, in.max_weight, error.WeightInvalid)) orelse in.default_weight,
        .metadata = (try in.metadata(o)) orelse in.emptyObject(),
        .health = (try in.health(o)) orelse "healthy",
        .ttl = (try in.integer(o, "ttl", in.min_ttl, in.max_ttl, error.TtlOutOfRange)) orelse in.default_ttl,
        .registered_ms = now,
        .updated_ms = now,
    };
    const value = try in.encodeRecord(rec);
    var attempt: usize = 0;
    while (attempt < max_attempts) : (attempt += 1) {
        try clear(at.key);
        const lease = try aspen.leaseGrant(rec.ttl);
        const created = store.create(at.key, value, lease) catch |err| {
            store.revokeQuietly(lease);
            return err;
        };
        if (created) |token| {
            return aspen.reply("ServiceRegisterResult", .{
                .service = at.service,
                .instance = at.instance,
                .fencing_token = token,
                .ttl = rec.ttl,
            });
        }
        store.revokeQuietly(lease); // registered concurrently: clear that one too, then retry
    }
    return in.fail(error.Conflict, "instance {s} is being registered concurrently", .{at.instance});
}

/// Remove any earlier registration at `key`: its lease revoked (and with it
/// the key), or the key deleted when it has no lease of ours.
fn clear(key: []const u8) !void {
    var attempt: usize = 0;
    while (attempt < max_attempts) : (attempt += 1) {
        const old = (try store.get(key)) orelse return;
        if (old.lease != 0) {
            if (aspen.leaseRevoke(old.lease)) |_| continue else |err| if (!store.hostCode(err, "LEASE_NOT_FOUND")) return err;
        }
        _ = try store.deleteAt(key, old.mod_revision);
    }
    return in.fail(error.Conflict, "instance key {s} keeps changing", .{key});
}

/// The registration at `at` if `fencing_token` is its token.
fn current(o: std.json.ObjectMap, at: Target) !store.Entry {
    const token = try in.token(o);
    const e = (try store.get(at.key)) orelse
        return in.fail(error.NotFound, "no instance {s} of service {s}", .{ at.instance, at.service });
    if (e.create_revision != token)
        return in.fail(error.StaleToken, "fencing token {d} is not the current registration's", .{token});
    return e;
}

fn heartbeat(body: aspen.Value) ![]const u8 {
    const o = try in.object(body, &.{ "service", "instance", "fencing_token" });
    const at = try target(o);
    const e = try current(o, at);
    const ttl = aspen.leaseKeepalive(e.lease) catch |err| {
        if (e.lease == 0 or store.hostCode(err, "LEASE_NOT_FOUND"))
            return in.fail(error.NotFound, "instance {s} expired", .{at.instance});
        return err;
    };
    return aspen.reply("ServiceHeartbeatResult", .{ .fencing_token = e.create_revision, .ttl = ttl });
}

fn deregister(body: aspen.Value) ![]const u8 {
    const o = try in.object(body, &.{ "service", "instance", "fencing_token" });
    const at = try target(o);
    const e = try current(o, at);
    if (e.lease == 0) {
        if (!try store.deleteAt(at.key, e.mod_revision)) return in.fail(error.StaleToken, "the registration changed", .{});
    } else {
        aspen.leaseRevoke(e.lease) catch |err| {
            if (store.hostCode(err, "LEASE_NOT_FOUND")) return in.fail(error.NotFound, "instance {s} expired", .{at.instance});
            return err;
        };
    }
    return aspen.reply("ServiceDeregisterResult", .{ .deregistered = true });
}

/// UpdateHealth sets `health`; UpdateMetadata any of version, tags, weight,
/// metadata. Compare-and-put on the mod revision, so concurrent updates
/// never lose one another and never outlive a re-registration.
fn update(body: aspen.Value, health_only: bool) ![]const u8 {
    const o = if (health_only)
        try in.object(body, &.{ "service", "instance", "fencing_token", "health" })
    else
        try in.object(body, &.{ "service", "instance", "fencing_token", "version", "tags", "weight", "metadata" });
    const at = try target(o);
    const health = if (health_only) (try in.health(o)) orelse return in.fail(error.HealthInvalid, "health is required", .{}) else null;
    const version = try in.text(o, "version", 0, in.max_version, error.VersionInvalid);
    const tags = try in.tags(o);
    const weight = try in.integer(o, "weight", 0, in.max_weight, error.WeightInvalid);
    const metadata = try in.metadata(o);
    var attempt: usize = 0;
    while (attempt < max_attempts) : (attempt += 1) {
        const e = try current(o, at);
        var rec = in.decodeRecord(e.value orelse "") orelse
            return in.fail(error.NotFound, "instance {s} holds no registry record", .{at.instance});
        if (health) |h| rec.health = h;
        if (version) |v| rec.version = v;
        if (tags) |t| rec.tags = t;
        if (weight) |w| rec.weight = w;
        if (metadata) |m| rec.metadata = m;
        rec.updated_ms = try store.nowMs();
        if (try store.replace(at.key, try in.encodeRecord(rec), e.lease, e.mod_revision)) {
            return aspen.reply("ServiceInstance", in.instanceOf(at.service, at.instance, rec, e.create_revision));
        }
    }
    return in.fail(error.Conflict, "instance {s} is being updated concurrently", .{at.instance});
}
