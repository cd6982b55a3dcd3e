# Sourced by the scripts: one build directory outside the clone, reused between runs.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/qr-functions-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
