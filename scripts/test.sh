#!/usr/bin/env bash
# The README's test command: set up a fresh machine, then run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
