#!/usr/bin/env bash
# The README's run command: set up this machine, start one node on the
# embedded default (SQLite + blob directory under ./aspen-data, or
# $ASPEN_DATA_DIR) on 127.0.0.1:7420 (or $ASPEN_LISTEN), and install the
# example plugins (echo, kv-counter, service-registry) built from source. Unsigned plugins are
# allowed: this is the local-development setup. The node's admin token
# ($data_dir/admin.token) is recorded for its URL in the credentials file
# (aspen token login), so `aspen …` in another terminal just works. Extra
# arguments go to `aspen node start`. Ctrl-C or SIGTERM stops the node.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

listen="${ASPEN_LISTEN:-127.0.0.1:7420}"
data_dir="${ASPEN_DATA_DIR:-./aspen-data}"
export ASPEN_URL="http://${listen}"
.venv/bin/aspen token login --url "$ASPEN_URL" --token-file "$data_dir/admin.token" >/dev/null
.venv/bin/aspen node start \
    --data-dir "$data_dir" \
    --listen "$listen" \
    --allow-unsigned-plugins \
    "$@" &
node=$!
trap 'kill -TERM "$node" 2>/dev/null || true; wait "$node"; exit $?' INT TERM

for _ in $(seq 1 100); do
    .venv/bin/aspen status >/dev/null 2>&1 && break
    kill -0 "$node" 2>/dev/null || { wait "$node"; exit $?; }
    sleep 0.2
done

for plugin in echo kv-counter service-registry; do
    if ! .venv/bin/aspen plugin info "$plugin" >/dev/null 2>&1; then
        .venv/bin/aspen plugin install "plugins/$plugin/plugin.wasm" --manifest "plugins/$plugin/plugin.json"
    fi
done
echo "aspen node serving on $ASPEN_URL with plugins: echo, kv-counter, service-registry (try: .venv/bin/aspen plugin list)"
wait "$node"
