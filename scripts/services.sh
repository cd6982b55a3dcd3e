#!/usr/bin/env bash
# Starts what the functions talk to, when it is not already running: PostgreSQL (with TLS on,
# so sslmode=require can be tested) and Redis, both on loopback. Safe to run again.
set -euo pipefail

PG="psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA"

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
  for _ in $(seq 1 50); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.2; done
fi

if [ "$($PG -c 'SHOW ssl')" != "on" ]; then
  echo "turning on TLS in PostgreSQL (self-signed certificate)"
  data_dir=$($PG -c 'SHOW data_directory')
  openssl req -new -x509 -days 3650 -nodes -subj "/CN=localhost" \
    -keyout "$data_dir/server.key" -out "$data_dir/server.crt" 2>/dev/null
  chown postgres:postgres "$data_dir/server.key" "$data_dir/server.crt"
  chmod 600 "$data_dir/server.key"
  $PG -c "ALTER SYSTEM SET ssl_cert_file = '$data_dir/server.crt'" \
      -c "ALTER SYSTEM SET ssl_key_file = '$data_dir/server.key'" \
      -c "ALTER SYSTEM SET ssl = on" -c "SELECT pg_reload_conf()" >/dev/null
  sleep 1
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.2; done
fi

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
