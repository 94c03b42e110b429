# Shared by the scripts: make a virtualenv and install into it (uv when available, else pip).
# usage: ensure_venv DIR PACKAGE...
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
