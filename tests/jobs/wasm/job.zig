//! A job module for the wasm executor tests: `execute_job` dispatches on
//! input.op (sum, fail, loop, kv, garbage, trap). It also exports the plugin
//! entry points, so the same module loads as an installed plugin ("jobplug").
const std = @import("std");
const aspen = @import("aspen");

pub const info = aspen.Info{
    .name = "jobplug",
    .version = "0.1.0",
    .handles = &.{"JobPlugPing"},
    .priority = 960,
    .kv_prefixes = &.{"jobplug:"},
};

export fn plugin_info() i32 {
    return aspen.exportInfo(info);
}

export fn handle_request() i32 {
    return aspen.exportHandler(handle);
}

fn handle(req: aspen.Request) ![]const u8 {
    _ = req;
    return aspen.reply("JobPlugPong", aspen.empty);
}

export fn execute_job() i32 {
    const out = run() catch |err| return aspen.fail(@errorName(err));
    aspen.output(out);
    return 0;
}

fn guestError(code: []const u8, message: []const u8, retryable: bool) ![]const u8 {
    return aspen.stringify(.{ .@"error" = .{ .code = code, .message = message, .retryable = retryable } });
}

fn run() ![]const u8 {
    const msg = try aspen.parse(try aspen.input());
    const input = aspen.field(msg, "input") orelse return error.NoInput;
    const op = aspen.fieldStr(input, "op") orelse return error.NoOp;
    if (std.mem.eql(u8, op, "sum")) {
        const a = (aspen.field(input, "a") orelse return error.NoA).integer;
        const b = (aspen.field(input, "b") orelse return error.NoB).integer;
        const attempt = (aspen.field(msg, "attempt") orelse return error.NoAttempt).integer;
        return aspen.stringify(.{ .result = .{ .sum = a + b, .attempt = attempt }, .log = "summed in the guest" });
    }
    if (std.mem.eql(u8, op, "fail")) return guestError("E_GUEST", "asked to fail", false);
    if (std.mem.eql(u8, op, "loop")) {
        var i: u64 = 0;
        while (true) {
            i +%= 1;
            std.mem.doNotOptimizeAway(i);
        }
    }
    if (std.mem.eql(u8, op, "kv")) {
        const key = aspen.fieldStr(input, "key") orelse "anything";
        aspen.kvPut(key, "value") catch return guestError(aspen.last_error_code, aspen.last_error_message, false);
        return aspen.stringify(.{ .result = "wrote" });
    }
    if (std.mem.eql(u8, op, "garbage")) return "not json at all";
    if (std.mem.eql(u8, op, "trap")) @trap();
    return error.UnknownOp;
}
