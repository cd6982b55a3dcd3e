#!/usr/bin/env bash
# Sets everything up and runs the warmer over a demo data set, printing its summary:
# starts Postgres and Redis if needed, builds the release binaries, creates the database
# `qr_demo`, applies migrations/, loads 5,000 students and 60 stalls with app-format QR tokens,
# then warms the cache twice (a cold run, then an unchanged re-run that only renews TTLs), and
# prepares the rotating QRs of the coming windows for the students of today's demo event.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/services.sh

students="${1:-5000}"
stalls="${2:-60}"
cargo build --release --quiet -p warm-qr-cache -p tools
bin="$CARGO_TARGET_DIR/release"

psql -h 127.0.0.1 -U postgres -d postgres -qtA -c "SELECT 1 FROM pg_database WHERE datname = 'qr_demo'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -d postgres -q -c "CREATE DATABASE qr_demo"
export NEON_DATABASE_URL="postgres://postgres@127.0.0.1:5432/qr_demo?sslmode=prefer"
export REDIS_URL="redis://127.0.0.1:6379"
export JWT_SECRET="demo-secret-not-for-production"
export CACHE_KEY_PREFIX="demo:"
export LOG_LEVEL="${LOG_LEVEL:-warn}"

"$bin/migrate"
"$bin/demo-data" "$students" "$stalls"
# Start cold, so the first run renders every image.
redis-cli -h 127.0.0.1 --scan --pattern 'demo:qr:*' | xargs -r -n 1000 redis-cli -h 127.0.0.1 unlink >/dev/null
echo
echo "== first run: every image rendered =="
"$bin/warm-qr-cache"
echo
echo "== second run: nothing changed, TTLs renewed =="
"$bin/warm-qr-cache"
echo
echo "== rotating QRs: the current 30-second window and the next two, for today's event =="
"$bin/warm-qr-cache" --rotating
