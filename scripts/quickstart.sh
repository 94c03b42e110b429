#!/usr/bin/env bash
# A real pipeline, fully offline: tap-jsonl reads examples/quickstart/orders.jsonl,
# target-databox loads it into the bundled Databox emulator, and we print what landed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh

echo "==> Installing target-databox into .venv and tap-jsonl into .venv-tap-jsonl"
sync_project .venv
ensure_venv .venv-tap-jsonl "tap-jsonl==0.3.1"

work=$(mktemp -d)
cleanup() { [ -n "${emulator_pid:-}" ] && kill "$emulator_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

echo "==> Starting the Databox emulator"
.venv/bin/target-databox-emulator --port 0 --api-key demo-key --processing-delay 0.2 \
  > "$work/emulator.out" 2> "$work/emulator.err" &
emulator_pid=$!
for _ in $(seq 100); do grep -q listening "$work/emulator.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/.*listening on //p' "$work/emulator.out")
[ -n "$url" ] || { echo "the emulator did not start:"; cat "$work/emulator.err"; exit 1; }
echo "    $url"

cat > "$work/tap.json" <<JSON
{"path": "$PWD/examples/quickstart/orders.jsonl", "stream_name": "orders",
 "primary_keys": ["order_id"], "emit_state_every": 4}
JSON
cat > "$work/target.json" <<JSON
{"api_key": "demo-key", "api_url": "$url", "data_source_name": "Quickstart",
 "batch_size_rows": 5}
JSON

echo "==> tap-jsonl | target-databox"
.venv-tap-jsonl/bin/tap-jsonl --config "$work/tap.json" 2> "$work/tap.err" \
  | .venv/bin/target-databox --config "$work/target.json" 2> "$work/target.err" \
  > "$work/state.jsonl" || { cat "$work/tap.err" "$work/target.err"; exit 1; }
grep -iE "created|using (data source|existing)|records .* verified|Emitting STATE" "$work/target.err" | sed 's/^.*| //' | sed 's/^/    /'

echo "==> STATE lines emitted (each after the records before it were verified):"
sed 's/^/    /' "$work/state.jsonl"
echo "==> What landed in the emulator:"
.venv/bin/python scripts/show_landed.py "$url"
