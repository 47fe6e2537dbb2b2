#!/usr/bin/env bash
# The README's test command: set up a fresh machine, then run the suite.
# With no arguments it first runs the plugin and event-loop tests once on the
# plain hand-off (aspen/handoff/plain.py, as on a machine without a C compiler), then everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
if [ $# -eq 0 ]; then
    ASPEN_HANDOFF=python .venv/bin/python -m pytest -q -p no:cacheprovider \
        tests/plugins tests/node/test_event_loop.py
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
