#!/usr/bin/env bash
# Replays every sample event in events/ against the three functions served locally by
# `cargo lambda watch`, and checks each answer against events/README.md: starts Postgres, Redis
# and moto's S3 server if needed, loads the demo data into the database `qr_local`, uploads the
# objects the S3 events name, signs fresh session tokens, then invokes each event (warm-*,
# then import-*, then api-*) and prints a table. Exits 1 if any answer is not the promised
# one. The committed events are not changed: the script works on copies in a temp folder,
# removed at the end unless QR_LOCAL_KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/services.sh
bash scripts/test-services.sh
if ! command -v cargo-lambda >/dev/null 2>&1; then
  echo "installing cargo-lambda (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check cargo-lambda
fi

work=$(mktemp -d /tmp/qr-local.XXXXXX)
watch_pid=""
cleanup() {
  if [ -n "$watch_pid" ]; then
    # cargo lambda watch runs each function as a child of its own: end the whole group.
    kill -- "-$watch_pid" 2>/dev/null || kill "$watch_pid" 2>/dev/null || true
    wait "$watch_pid" 2>/dev/null || true
  fi
  if [ -z "${QR_LOCAL_KEEP:-}" ]; then rm -rf "$work"; else echo "events and answers kept in $work"; fi
}
trap cleanup EXIT

cargo build --quiet -p tools -p warm-qr-cache -p import-spreadsheet -p http-api
bin="$CARGO_TARGET_DIR/debug"

export NEON_DATABASE_URL="postgres://postgres@127.0.0.1:5432/qr_local?sslmode=disable"
export REDIS_URL="redis://127.0.0.1:6379"
export JWT_SECRET="local-replay-secret-not-for-production"
export CACHE_KEY_PREFIX="local:"
export IMPORT_BUCKET="qr-functions-dev-imports-123456789012"
export AWS_ENDPOINT_URL_S3="http://127.0.0.1:4566" S3_FORCE_PATH_STYLE=true
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export LOG_LEVEL="${LOG_LEVEL:-warn}"

psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS qr_local WITH (FORCE)" -c "CREATE DATABASE qr_local"
"$bin/migrate" >/dev/null
"$bin/demo-data" 200 12
redis-cli -h 127.0.0.1 --scan --pattern 'local:*' | xargs -r -n 1000 redis-cli -h 127.0.0.1 unlink >/dev/null
"$bin/sample-uploads" "$work"
# The QR and rotating events ask for a demo student (the committed ids exist in no database).
student_id=$(psql -h 127.0.0.1 -U postgres -d qr_local -qtA \
  -c "SELECT id FROM students WHERE registration_no = '2021000000'")
python3 scripts/local_events.py prepare events "$work/events" "$work" "$student_id"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "starting cargo lambda watch on 127.0.0.1:$port (log: $work/watch.log)"
# A group of its own, so the cleanup ends the functions it starts too.
setsid cargo lambda watch -A 127.0.0.1 -P "$port" --ignore-changes >"$work/watch.log" 2>&1 &
watch_pid=$!
for _ in $(seq 1 300); do
  curl -fsS -o /dev/null "http://127.0.0.1:$port/lambda-url/http-api/health" 2>/dev/null && break
  kill -0 "$watch_pid" 2>/dev/null || { cat "$work/watch.log"; exit 1; }
  sleep 1
done

mkdir -p "$work/answers"
invoke() { # FUNCTION FILE
  local name
  name=$(basename "$2")
  set +e
  timeout 300 cargo lambda invoke -A 127.0.0.1 -P "$port" "$1" --data-file "$2" -o json \
    >"$work/answers/$name.answer" 2>&1
  echo $? >"$work/answers/$name.rc"
  set -e
}
for file in "$work"/events/warm-*.json; do invoke warm-qr-cache "$file"; done
for file in "$work"/events/import-*.json; do invoke import-spreadsheet "$file"; done
import_id=$(psql -h 127.0.0.1 -U postgres -d qr_local -qtA \
  -c "SELECT id FROM imports WHERE object_key = 'imports/students/batch 2024 CSE.xlsx' ORDER BY created_at DESC LIMIT 1")
python3 scripts/local_events.py import-id "$work/events" "${import_id:-none}"
for file in "$work"/events/api-*.json; do invoke http-api "$file"; done

echo
python3 scripts/local_events.py check "$work/events" "$work/answers"
