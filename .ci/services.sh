#!/usr/bin/env bash
# Make sure the services the tests talk to (PostgreSQL, Redis) are up; start them
# if they are down. A service that still cannot be reached is a failure, never a skip.
set -uo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

missing=()
command -v pg_isready >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = "0" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! pg_up; then
  echo "PostgreSQL is down; starting it" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start 2>/dev/null || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if ! redis_up; then
  echo "Redis is down; starting it" >&2
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null 2>&1 || true
  for _ in $(seq 1 30); do redis_up && break; sleep 1; done
fi

status=0
command -v npm >/dev/null 2>&1 || { echo "npm is not installed (apt install nodejs npm)" >&2; status=1; }
command -v chromium >/dev/null 2>&1 || { echo "Chromium is not installed (apt install chromium)" >&2; status=1; }
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || { echo "nginx is not installed (apt install nginx)" >&2; status=1; }
pg_up || { echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; status=1; }
redis_up || { echo "Redis is not reachable on 127.0.0.1:6379" >&2; status=1; }
[ $status -eq 0 ] && echo "services: PostgreSQL and Redis up"
exit $status
