#!/usr/bin/env bash
# Install the project with its dev dependencies into .venv (the versions in uv.lock) and run
# the whole test suite (or what the arguments select).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
sync_project .venv dev
exec .venv/bin/python -m pytest "$@"
