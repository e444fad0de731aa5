#!/usr/bin/env bash
# Starts redis-server and three goomerang replicas on it, then a client on each:
# a message published on one replica reaches the clients of all three, and a
# queue group's jobs each go to one worker in the whole cluster.
set -euo pipefail
cd "$(dirname "$0")/../.."

redis_server="${REDIS_SERVER:-$(command -v redis-server || echo /usr/bin/redis-server)}"
if [ ! -x "$redis_server" ]; then
  echo "redis-server is needed: sudo apt-get install redis-server" >&2
  exit 1
fi
cargo build --quiet -p cluster
bin=target/debug/cluster
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$redis_server" --bind 127.0.0.1 --port "$port" --save "" --appendonly no >"$work/redis.log" &
pids+=($!)
until grep -q "Ready to accept connections" "$work/redis.log"; do
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/redis.log" >&2; exit 1; }
  sleep 0.05
done
echo "[run] redis-server on 127.0.0.1:$port"

urls=()
for i in 1 2 3; do
  "$bin" replica "redis://127.0.0.1:$port" >"$work/replica$i.out" &
  pids+=($!)
  until [ -s "$work/replica$i.out" ]; do
    kill -0 "${pids[-1]}" 2>/dev/null || { echo "replica $i failed" >&2; exit 1; }
    sleep 0.05
  done
  urls+=("$(head -n1 "$work/replica$i.out")")
  echo "[run] replica $i on ${urls[-1]}"
done

"$bin" demo "${urls[@]}"
