# Shared by the scripts: make a virtualenv and install into it (uv when available, else pip).

# usage: ensure_venv DIR PACKAGE...   (tools outside the project: Meltano, taps)
ensure_venv() {
  local dir=$1; shift
  if [ ! -x "$dir/bin/python" ]; then
    if command -v uv >/dev/null 2>&1; then uv venv -q "$dir"; else python3 -m venv "$dir"; fi
  fi
  if command -v uv >/dev/null 2>&1; then
    # Bytecode at install time, as pip does: every start of the target would otherwise
    # compile singer-sdk and its dependencies again (~0.5 s per run).
    VIRTUAL_ENV="$dir" uv pip install -q --compile-bytecode "$@"
  else
    "$dir/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$dir/bin/python" -m pip install -q "$@"
  fi
}

# usage: sync_project DIR [EXTRA...]   (this project, editable, e.g. `sync_project .venv dev`)
# With uv: exactly the versions in uv.lock (--frozen: the lock is used as committed, never
# re-resolved; `uv lock --check` in .ci/run keeps it in step with pyproject.toml).
# --inexact: packages installed beside the project (actionlint in CI) are left alone.
# Without uv: pip, within pyproject.toml's version ranges (not locked).
sync_project() {
  local dir=$1; shift
  if command -v uv >/dev/null 2>&1; then
    local extras=() extra
    for extra in "$@"; do extras+=(--extra "$extra"); done
    UV_PROJECT_ENVIRONMENT="$dir" uv sync -q --frozen --inexact --compile-bytecode \
      "${extras[@]}"
  else
    local spec=.
    if [ $# -gt 0 ]; then spec=".[$(IFS=,; echo "$*")]"; fi
    echo "uv not found: installing with pip within pyproject.toml's ranges (uv.lock unused)" >&2
    ensure_venv "$dir" -e "$spec"
  fi
}
