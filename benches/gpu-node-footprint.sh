#!/usr/bin/env bash
# The GPU-node agent's footprint (benches/RESULTS.md, "GPU-node footprint"):
# tracegate started as deploy/systemd/tracegate.service starts it (one
# runtime thread) on benches/scenarios/gpu-node.yaml, its memory and CPU
# read from /proc while idle, then under the scenario's load (10 k spans/s
# for 60 s), right after the load (the working set) and idle again.
# Usage: benches/gpu-node-footprint.sh [TRACEGATE [LOADGEN]] [-- send args]
# (default: the release build's binaries; build them first with
# `cargo build --release -p tracegate -p tracegate-benches`).
# Env: IDLE (seconds of the idle measurement after start, default 20),
# AFTER (seconds of the idle measurement after the load, default 70: more
# than the minute after which tracegate lets go of code pages again),
# SCENARIO (default benches/scenarios/gpu-node.yaml; another copy of the
# profile, e.g. an older one for an older build to A/B against;
# benches/scenarios/gpu-node-floor.yaml is the same load into the receiver
# alone, the floor under the profile's cost).
# Prints one JSON object.
set -euo pipefail
cd "$(dirname "$0")/.."
TG=target/release/tracegate
LOADGEN=target/release/tracegate-loadgen
[ $# -gt 0 ] && [ "$1" != "--" ] && { TG=$1; shift; }
[ $# -gt 0 ] && [ "$1" != "--" ] && { LOADGEN=$1; shift; }
[ "${1:-}" = "--" ] && shift
IDLE=${IDLE:-20}
AFTER=${AFTER:-70}
SCENARIO=${SCENARIO:-benches/scenarios/gpu-node.yaml}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GRPC=$(free_port) HTTP=$(free_port) SINK=$(free_port) METRICS=$(free_port)
DIR=$(mktemp -d)
PID=
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$DIR"' EXIT

TG_STORAGE_DIR=$DIR TG_GRPC_ENDPOINT=127.0.0.1:$GRPC TG_HTTP_ENDPOINT=127.0.0.1:$HTTP \
  SINK_ENDPOINT=127.0.0.1:$SINK "$TG" --config "$SCENARIO" \
  --worker-threads=1 --set service.telemetry.metrics.address=127.0.0.1:$METRICS \
  > "$DIR/log" 2>&1 &
PID=$!

# kB fields of /proc/PID/status as JSON members, then utime+stime in ticks.
status() {
  awk '/^(VmRSS|RssAnon|RssFile|Threads):/ { printf "\"%s\": %s, ", $1, $2 }' "/proc/$PID/status" \
    | sed 's/:"/"/g; s/, $//'
}
ticks() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }
hz=$(getconf CLK_TCK)
# Seconds of CPU between two tick counts, as a JSON number (bc would print
# ".01", which is not one).
cpu_s() { awk -v a="$1" -v b="$2" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }'; }

sleep 3
started=$(status)
t0=$(ticks); sleep "$IDLE"; t1=$(ticks)
idle=$(status)
load=$("$LOADGEN" run --scenario "$SCENARIO" \
  --target "http://127.0.0.1:$GRPC" --target-pid "$PID" --target-metrics "127.0.0.1:$METRICS" \
  --sink-listen "127.0.0.1:$SINK" --label gpu-node -- "$@" 2>/dev/null | tail -n 1)
loaded=$(status)
t2=$(ticks); sleep "$AFTER"; t3=$(ticks)
after=$(status)
printf '{"started": {%s}, "idle": {%s, "cpu_s": %s}, "load": %s, "right_after_load": {%s}, "after_load": {%s, "cpu_s": %s}, "loadavg": "%s"}\n' \
  "$started" "$idle" "$(cpu_s "$t0" "$t1")" "$load" "$loaded" \
  "$after" "$(cpu_s "$t2" "$t3")" "$(cut -d' ' -f1-3 /proc/loadavg)"
