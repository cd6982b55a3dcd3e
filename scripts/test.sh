#!/usr/bin/env bash
# Runs every test: unit tests and the end-to-end suites against real Postgres and Redis on
# loopback (started here when they are down). Each test makes its own database and key prefix.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/services.sh
bash scripts/test-services.sh

# The SAM template: cfn-lint, then SAM's own check (which runs cfn-lint on the transformed
# template). Offline: a region and dummy credentials so nothing looks for real ones, and no
# telemetry.
QR_TOOLS_VENV="${QR_TOOLS_VENV:-/var/tmp/qr-functions-tools/venv}"
"$QR_TOOLS_VENV/bin/cfn-lint" template.yaml
AWS_DEFAULT_REGION=ap-south-1 AWS_ACCESS_KEY_ID=offline AWS_SECRET_ACCESS_KEY=offline \
  SAM_CLI_TELEMETRY=0 "$QR_TOOLS_VENV/bin/sam" validate --lint --template-file template.yaml

cargo fmt --all -- --check
cargo build --workspace --all-targets --quiet
cargo clippy --workspace --all-targets --quiet -- -D warnings
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
