#!/usr/bin/env bash
# Starts what the functions talk to, when it is not already running: PostgreSQL (with TLS on,
# so sslmode=require can be tested) and Redis, both on loopback. Installs nothing. Safe to run
# again. The demo needs only this; the tests also run scripts/test-services.sh.
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
