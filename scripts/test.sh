#!/usr/bin/env bash
# The README's test command: set up a fresh machine, then run the suite.
# With no arguments it first runs the plugin and event-loop tests once on the
# plain hand-off (aspen/handoff/plain.py, as on a machine without a C compiler), the node
# tests on granian (the other HTTP server) and the blob tests on the segment tree's twin
# (aspen/storage/tree_hash_py.py), then everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
if [ $# -eq 0 ]; then
    ASPEN_HANDOFF=python .venv/bin/python -m pytest -q -p no:cacheprovider \
        tests/plugins tests/node/test_event_loop.py
    ASPEN_HTTP_SERVER=granian .venv/bin/python -m pytest -q -p no:cacheprovider tests/node
    ASPEN_TREEHASH=python .venv/bin/python -m pytest -q -p no:cacheprovider \
        tests/blobs/test_tree_hash.py tests/blobs/test_integrity.py tests/blobs/test_add_get.py
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
