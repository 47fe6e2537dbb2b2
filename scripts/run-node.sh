#!/usr/bin/env bash
# The README's run command: set up this machine, then start one node on the
# embedded default (SQLite + blob directory under ./aspen-data, or $ASPEN_DATA_DIR)
# listening on 127.0.0.1:7420 (or $ASPEN_LISTEN). Extra arguments go to
# `aspen node start`. Stop it with Ctrl-C or SIGTERM (drains, then closes the stores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/aspen node start \
    --data-dir "${ASPEN_DATA_DIR:-./aspen-data}" \
    --listen "${ASPEN_LISTEN:-127.0.0.1:7420}" \
    "$@"
