#!/usr/bin/env bash
# Request latency under a mixed load (issue 14, goal 6): tracegate
# (benches/scenarios/mixed-latency.yaml, 2 worker threads) takes, at once,
#  - large OTLP/JSON bodies over HTTP (10 000 spans each, closed loop),
#  - large gzip (level 6) OTLP/gRPC messages (10 000 spans each, closed loop),
#  - the probe: 100-span OTLP/gRPC requests at 5 000 spans/s for 10 s,
# and prints the probe's round-trip p50/p99/max, the heavy loads' spans and
# p99, and tracegate's CPU seconds.
# Usage: benches/mixed-latency.sh [TRACEGATE BINARY] (default target/release/tracegate)
set -euo pipefail
cd "$(dirname "$0")/.."
TG=${1:-target/release/tracegate}
LOADGEN=target/release/tracegate-loadgen
D=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$D"' EXIT
"$LOADGEN" sink --listen 127.0.0.1:0 >"$D/sink.out" 2>&1 &
SINK=$!
until grep -q listening "$D/sink.out" 2>/dev/null; do sleep 0.1; done
SINK_ENDPOINT=$(grep -o '127.0.0.1:[0-9]*' "$D/sink.out" | head -1) \
  "$TG" --config benches/scenarios/mixed-latency.yaml --worker-threads=2 >"$D/tg.out" 2>&1 &
TGP=$!
address() { grep -s "\"protocol\":\"$1\"" "$D/tg.out" | grep -o '127.0.0.1:[0-9]*' | head -1; }
until [ -n "$(address grpc)" ] && [ -n "$(address http)" ]; do sleep 0.1; done
GRPC=$(address grpc)
HTTP=$(address http)
"$LOADGEN" send --endpoint "http://$HTTP" --protocol http-json --traces-per-round 1000 \
  --requests-per-trace 1 --connections 1 --duration 12s >"$D/json.out" 2>/dev/null &
J=$!
"$LOADGEN" send --endpoint "http://$GRPC" --compression gzip --compression-level 6 \
  --traces-per-round 1000 --requests-per-trace 1 --connections 1 --in-flight 1 \
  --duration 12s >"$D/gz.out" 2>/dev/null &
Z=$!
"$LOADGEN" send --endpoint "http://$GRPC" --traces-per-round 10 --requests-per-trace 1 \
  --connections 1 --in-flight 4 --rate 5000 --duration 10s >"$D/probe.out"
wait $J $Z
CPU=$(awk '{print ($14+$15)/100}' /proc/$TGP/stat)
kill $TGP $SINK
python3 - "$D" "$CPU" <<'PY'
import json, sys
d = sys.argv[1]
p, j, g = (json.load(open(f"{d}/{n}.out")) for n in ("probe", "json", "gz"))
print(f"probe p50 {p['latency_p50_ms']:.2f} p99 {p['latency_p99_ms']:.2f} "
      f"max {p['latency_max_ms']:.2f} ms ({p['requests']} requests) | "
      f"json {j['spans_acked']} spans, p99 {j['latency_p99_ms']:.0f} ms | "
      f"gzip {g['spans_acked']} spans, p99 {g['latency_p99_ms']:.0f} ms | "
      f"tracegate CPU {sys.argv[2]} s")
PY
