#!/usr/bin/env bash
# Install Meltano into its own virtualenv, .venv-meltano (Meltano's dependencies stay out of
# the project's .venv). tests/test_meltano.py uses .venv-meltano/bin/meltano, or $MELTANO_BIN.
# `uv` goes in too: Meltano creates the plugins' virtualenvs with it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
ensure_venv .venv-meltano "meltano>=4.4,<5" uv
.venv-meltano/bin/meltano --version
