#!/usr/bin/env bash
# Runs benchmark scenarios with release builds: benches/run.sh NAME... (names
# of files in benches/scenarios/, default: passthrough). Extra `send`
# arguments go after `--`. Comparison mode, e.g. against an OpenTelemetry
# Collector that exports to 127.0.0.1:4319:
#   target/release/tracegate-loadgen run --scenario benches/scenarios/passthrough.yaml \
#     --target http://127.0.0.1:4317 --target-pid "$(pidof otelcol-contrib)" \
#     --target-metrics 127.0.0.1:8888 --sink-listen 127.0.0.1:4319 --label otelcol-contrib
# Results: target/bench-results/NAME-DATE.json and target/bench-results/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
names=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do names+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#names[@]} -eq 0 ] && names=(passthrough)

cargo build --release -q -p tracegate -p tracegate-benches
for name in "${names[@]}"; do
  target/release/tracegate-loadgen run --scenario "benches/scenarios/$name.yaml" -- "$@" > /dev/null
done
cat target/bench-results/results.md
