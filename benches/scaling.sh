#!/usr/bin/env bash
# Scaling with cores (issue 14, goal 7): the same scenario run with
# tracegate pinned (taskset) to one CPU with --worker-threads=1, then to two
# CPUs with --worker-threads=2, alternating, ROUNDS rounds each; prints each
# run's delivered throughput (spans per wall-clock second, as the loader
# measured it) and tracegate's CPU per span, then the medians and the ratio
# of the two throughputs.
#
# Usage: benches/scaling.sh [SCENARIO...] [-- more send args]
#   default scenarios: passthrough tail-sampling
# Environment:
#   TG          the tracegate binary (default target/release/tracegate)
#   ROUNDS      rounds per scenario (default 4)
#   ONE_CPU     CPU list for the 1-thread runs (default 1)
#   TWO_CPUS    CPU list for the 2-thread runs (default 0,1)
#   LOADER_CPUS CPU list for the loader and sink (default: unpinned)
# On a machine with only two CPUs the loader and sink share them with
# tracegate, so the ratio is a lower bound on what tracegate alone would
# reach: say where the loader ran when recording a result. Results also go
# to target/bench-results/ as the runner writes them.
set -euo pipefail
cd "$(dirname "$0")/.."
names=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do names+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#names[@]} -eq 0 ] && names=(passthrough tail-sampling)
TG=$(realpath "${TG:-target/release/tracegate}")
ROUNDS=${ROUNDS:-4}
ONE_CPU=${ONE_CPU:-1}
TWO_CPUS=${TWO_CPUS:-0,1}
LOADGEN=target/release/tracegate-loadgen
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT

# The runner starts the binary it is given with tracegate's arguments; a
# wrapper that execs keeps the process id the runner measures.
for n in 1 2; do
  cpus=$ONE_CPU
  [ "$n" = 2 ] && cpus=$TWO_CPUS
  printf '#!/bin/sh\nexec taskset -c %s "%s" --worker-threads=%s "$@"\n' "$cpus" "$TG" "$n" >"$D/tg$n"
  chmod +x "$D/tg$n"
done
loader=()
[ -n "${LOADER_CPUS:-}" ] && loader=(taskset -c "$LOADER_CPUS")

echo "# $(date -u +%FT%TZ) load average $(cut -d' ' -f1-3 /proc/loadavg); tracegate $TG"
echo "# 1 thread on CPU $ONE_CPU, 2 threads on CPUs $TWO_CPUS, loader on ${LOADER_CPUS:-any CPU}"
for name in "${names[@]}"; do
  for round in $(seq "$ROUNDS"); do
    for n in 1 2; do
      "${loader[@]}" "$LOADGEN" run --scenario "benches/scenarios/$name.yaml" \
        --tracegate "$D/tg$n" --label "$name-${n}t" --out "$D/out" -- "$@" >"$D/result.json" 2>/dev/null
      jq -r --arg n "$n" --arg name "$name" --arg load "$(cut -d' ' -f1 /proc/loadavg)" \
        '[$name, $n, (.load.spans_per_second | floor), (.target_cpu_ns_per_span | floor), $load] | @tsv' \
        "$D/result.json" | tee -a "$D/rows.tsv"
    done
  done
done
echo "# scenario, threads, median spans/s (wall), median tracegate CPU ns/span; ratio 2/1"
python3 - "$D/rows.tsv" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
for name in dict.fromkeys(r[0] for r in rows):
    med = {}
    for n in ("1", "2"):
        sel = [r for r in rows if r[0] == name and r[1] == n]
        med[n] = statistics.median(float(r[2]) for r in sel)
        ns = statistics.median(float(r[3]) for r in sel)
        print(f"{name}\t{n}\t{med[n]:.0f}\t{ns:.0f}")
    print(f"{name}\tratio\t{med['2'] / med['1']:.2f}")
PY
