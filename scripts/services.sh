#!/usr/bin/env bash
# Make sure Postgres, Redis and RabbitMQ answer on loopback; start any that do not.
# The test suite needs all three (its service legs fail rather than skip in CI).
set -u

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  local name=$1 port=$2 tries=${3:-60}
  for _ in $(seq "$tries"); do
    answers "$port" && { echo "services: $name answers on $port"; return 0; }
    sleep 1
  done
  echo "services: $name does not answer on $port" >&2
  return 1
}

if ! answers 5432; then
  echo "services: starting Postgres"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! answers 6379; then
  echo "services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
if ! answers 5672; then
  echo "services: starting RabbitMQ"
  rabbitmq-server -detached || true
fi

status=0
wait_for Postgres 5432 60 || status=1
wait_for Redis 6379 30 || status=1
wait_for RabbitMQ 5672 120 || status=1
exit $status
