#!/usr/bin/env bash
# End-to-end passthrough benchmark: loadgen → tracegate (OTLP/gRPC → batch →
# OTLP/gRPC) → counting sink, all on loopback, through the scenario runner
# (benches/scenarios/passthrough.yaml). Reports tracegate's spans per
# CPU-second and peak RSS, and the loader's own CPU per span.
# Usage: benches/passthrough.sh [SPANS] [CONNECTIONS] [-- more send args]
# The JSON result and a Markdown row go to target/bench-results/.
set -euo pipefail
cd "$(dirname "$0")/.."
SPANS=${1:-2000000}
CONNECTIONS=${2:-2}
shift $(( $# > 2 ? 2 : $# ))
[ "${1:-}" = "--" ] && shift

cargo build --release -q -p tracegate -p tracegate-benches
exec target/release/tracegate-loadgen run --scenario benches/scenarios/passthrough.yaml \
  -- --spans "$SPANS" --connections "$CONNECTIONS" "$@"
