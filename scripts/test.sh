#!/usr/bin/env bash
# Runs every test: unit tests and the end-to-end suites against real Postgres and Redis on
# loopback (started here when they are down). Each test makes its own database and key prefix.
# Then replays every sample event in events/ through `cargo lambda watch` (scripts/local.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/services.sh
bash scripts/test-services.sh

cargo fmt --all -- --check
cargo build --workspace --all-targets --quiet
cargo clippy --workspace --all-targets --quiet -- -D warnings
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
bash scripts/local.sh
