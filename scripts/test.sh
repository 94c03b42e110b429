#!/usr/bin/env bash
# Install the project with its test dependencies into .venv and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
ensure_venv .venv -e ".[dev]"
exec .venv/bin/python -m pytest "$@"
