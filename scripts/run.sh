#!/usr/bin/env bash
# `make run`: starts a private redis-server (unless SHOAL_REDIS_URL is set)
# and `shoal dev`, which prints the URLs, the admin key and an OBS-ready
# stream key. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

export SHOAL_DATA_DIR="${SHOAL_DATA_DIR:-./data}"
mkdir -p "$SHOAL_DATA_DIR"

redis_pid=""
cleanup() {
  if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [ -z "${SHOAL_REDIS_URL:-}" ]; then
  port=6390
  while port_in_use "$port"; do port=$((port + 1)); done
  mkdir -p "$SHOAL_DATA_DIR/redis"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$(cd "$SHOAL_DATA_DIR/redis" && pwd)" \
    --save 60 1 --appendonly no --daemonize no --logfile redis.log &
  redis_pid=$!
  for _ in $(seq 1 50); do
    if redis-cli -p "$port" ping >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
  if ! redis-cli -p "$port" ping >/dev/null 2>&1; then
    echo "run: redis-server did not start; see $SHOAL_DATA_DIR/redis/redis.log" >&2
    exit 1
  fi
  export SHOAL_REDIS_URL="redis://127.0.0.1:$port/0"
  echo "run: private redis-server on 127.0.0.1:$port (data in $SHOAL_DATA_DIR/redis)"
fi

# Ctrl-C reaches shoal directly (same process group); this script waits for
# it to finish its shutdown, then stops redis.
trap '' INT
bin/shoal dev
