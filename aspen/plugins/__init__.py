"""WASM plugins: Extism-sandboxed request handlers with permissioned host
functions and KV namespace isolation. See docs/plugin-abi.md for the guest
ABI and sdk/zig for the guest SDK."""
