"""Process plugins: a child process in any language speaking line-delimited
JSON-RPC over its stdin and stdout (docs/plugin-process.md)."""
