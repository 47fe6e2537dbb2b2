/* cpu-burn: a CPU-bound plugin written in C against the raw ABI (no SDK),
 * used by benchmarks/bench_plugin.py to show that calls run in parallel.
 * Burn {"rounds": n} is ignored on purpose: the work is fixed so the
 * plugin needs no JSON parser; the body of the reply is a checksum. */
#include <stdint.h>

#define ENV(name) __attribute__((import_module("extism:host/env"), import_name(name)))
#define EXPORT(name) __attribute__((export_name(name)))

ENV("alloc") extern uint64_t extism_alloc(uint64_t n);
ENV("store_u8") extern void extism_store_u8(uint64_t p, uint8_t v);
ENV("output_set") extern void extism_output_set(uint64_t p, uint64_t n);

static const char INFO[] =
    "{\"name\":\"cpu-burn\",\"version\":\"0.1.0\",\"handles\":[\"Burn\"],"
    "\"priority\":990,\"app_id\":null,\"kv_prefixes\":[],\"description\":\"CPU-bound work for the benchmark\"}";

static void output(const char *s, uint64_t n) {
    uint64_t p = extism_alloc(n);
    for (uint64_t i = 0; i < n; i++) extism_store_u8(p + i, (uint8_t)s[i]);
    extism_output_set(p, n);
}

EXPORT("plugin_info") int32_t plugin_info(void) {
    output(INFO, sizeof(INFO) - 1);
    return 0;
}

EXPORT("handle_request") int32_t handle_request(void) {
    volatile uint64_t x = 88172645463325252ull;
    for (uint32_t i = 0; i < 3000000; i++) { /* xorshift64 */
        uint64_t v = x;
        v ^= v << 13; v ^= v >> 7; v ^= v << 17;
        x = v;
    }
    char buf[64] = "{\"type\":\"Burned\",\"body\":{\"x\":";
    uint64_t n = 0, v = x % 1000000;
    while (buf[n]) n++;
    char digits[20]; int d = 0;
    do { digits[d++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (d) buf[n++] = digits[--d];
    buf[n++] = '}'; buf[n++] = '}';
    output(buf, n);
    return 0;
}
