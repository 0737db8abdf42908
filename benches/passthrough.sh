#!/usr/bin/env bash
# End-to-end passthrough benchmark: loadgen → tracegate (OTLP/gRPC → batch →
# OTLP/gRPC) → counting sink, all on loopback. Reports tracegate's spans per
# CPU-second (user + system time of the tracegate process while the load
# ran) and its peak RSS. Usage: benches/passthrough.sh [SPANS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
SPANS=${1:-2000000}
CONNECTIONS=${2:-4}
GRPC_PORT=${TG_BENCH_GRPC_PORT:-24317}
SINK_PORT=${TG_BENCH_SINK_PORT:-24318}

cargo build --release -q -p tracegate -p tracegate-benches
BIN=target/release
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

$BIN/tracegate-loadgen sink --listen 127.0.0.1:$SINK_PORT > /tmp/tg-bench-sink.log &
SINK=$!
TG_GRPC_ENDPOINT=127.0.0.1:$GRPC_PORT SINK_ENDPOINT=127.0.0.1:$SINK_PORT \
  $BIN/tracegate --config benches/scenarios/passthrough.yaml 2> /tmp/tg-bench-tracegate.log &
TG=$!
trap 'kill $SINK $TG 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q "tracegate is ready" /tmp/tg-bench-tracegate.log 2>/dev/null && break
  sleep 0.1
done

before=$(cpu_ticks $TG)
result=$($BIN/tracegate-loadgen send --endpoint http://127.0.0.1:$GRPC_PORT \
  --spans "$SPANS" --connections "$CONNECTIONS")
after=$(cpu_ticks $TG)
# Let the last batch (timeout 200ms) reach the sink before counting.
for _ in $(seq 50); do
  sent=$(echo "$result" | sed 's/.*"spans_acked":\([0-9]*\).*/\1/')
  got=$(tail -n1 /tmp/tg-bench-sink.log | awk '{print $2}')
  [ "${got:-0}" -ge "$sent" ] && break
  sleep 0.1
done
after_drain=$(cpu_ticks $TG)
hwm=$(awk '/VmHWM/ { print $2 }' "/proc/$TG/status")
cpu_s=$(echo "($after_drain - $before) / $CLK_TCK" | bc -l)
echo "loadgen: $result"
echo "sink received: ${got:-0} spans"
printf 'tracegate: %.2f CPU-seconds, %.0f spans per CPU-second, %.0f ns CPU per span, peak RSS %d MiB\n' \
  "$cpu_s" "$(echo "$sent / $cpu_s" | bc -l)" "$(echo "$cpu_s * 1000000000 / $sent" | bc -l)" $((hwm / 1024))
