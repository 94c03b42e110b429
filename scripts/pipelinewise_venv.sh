#!/usr/bin/env bash
# Install pipelinewise-tap-postgres (a singer-python tap: table versions in its STATE, and
# ACTIVATE_VERSION messages) into its own virtualenv, .venv-pipelinewise, for the real-tap
# corpus (tests/test_corpus.py). 1.8.4 pins psycopg2-binary 2.9.3, which has no wheel for
# Python >= 3.11; the override takes a later 2.9.x binary wheel instead of compiling it.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.venv-pipelinewise}
override=$(mktemp)
trap 'rm -f "$override"' EXIT
echo 'psycopg2-binary>=2.9.9,<2.10' > "$override"
if command -v uv >/dev/null 2>&1; then
  [ -x "$dir/bin/python" ] || uv venv -q "$dir"
  VIRTUAL_ENV="$dir" uv pip install -q --override "$override" "pipelinewise-tap-postgres==1.8.4"
else
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  # pip has no overrides: the dependencies first, then the tap without its pin.
  "$dir/bin/python" -m pip install -q "pipelinewise-singer-python==1.*" \
    "psycopg2-binary>=2.9.9,<2.10" "strict-rfc3339==0.7"
  "$dir/bin/python" -m pip install -q --no-deps "pipelinewise-tap-postgres==1.8.4"
fi
"$dir/bin/tap-postgres" --help >/dev/null
echo "$dir/bin/tap-postgres"
