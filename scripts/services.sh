#!/usr/bin/env bash
# Find or bring up RabbitMQ, PostgreSQL and Redis on localhost.
# Order: services already running; else start locally installed ones; else `docker compose`
# with deploy/compose.yaml where Docker works; else say exactly what to install.
set -u
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_up() { for _ in $(seq 1 60); do up "$1" && return 0; sleep 1; done; return 1; }

missing=()
start_local() {
  local port=$1 name=$2; shift 2
  up "$port" && return 0
  if command -v "$1" >/dev/null 2>&1 || [ -x "$1" ]; then
    echo "starting $name: $*" >&2
    "$@" >/dev/null 2>&1 || true
    wait_up "$port" && return 0
  fi
  missing+=("$name")
}

start_local 5432 postgresql sh -c 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start'
start_local 6379 redis redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
  --dir /var/lib/redis --logfile /var/log/redis/ci.log
start_local 5672 rabbitmq rabbitmq-server -detached

if [ ${#missing[@]} -gt 0 ] && command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  echo "starting ${missing[*]} with docker compose (deploy/compose.yaml)" >&2
  # Only the three services the tests use, not the whole system (MinIO, cluster, API, workers).
  docker compose -f deploy/compose.yaml up -d postgres redis rabbitmq && wait_up 5432 && wait_up 6379 && wait_up 5672 && missing=()
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "importd needs ${missing[*]} on 127.0.0.1 (PostgreSQL :5432 trust auth, Redis :6379, RabbitMQ :5672 guest/guest)." >&2
  echo "Install them (Debian: apt-get install postgresql redis-server rabbitmq-server) or Docker, then run again." >&2
  exit 1
fi
# RabbitMQ accepts TCP before it is ready for AMQP; wait until it answers.
if command -v rabbitmqctl >/dev/null 2>&1; then
  for _ in $(seq 1 60); do rabbitmqctl -q await_startup >/dev/null 2>&1 && break; sleep 1; done
fi
echo "services: postgresql, redis, rabbitmq up" >&2
