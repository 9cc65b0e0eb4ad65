#!/usr/bin/env bash
# Garbage per request (`BENCH_MODE=alloc npm run bench`, or run this file): Pilotfish and the bare undici
# forwarder, in turn, alone on PROXY_CPU under `node --trace-gc`, behind the nginx origin (1 KiB) with
# wrk -t1 -c$CONNS on LOAD_CPU: after a 3 s warm-up, DURATION seconds of load, and the bytes the young
# generation took in over them (each scavenge's "before" less the previous collection's "after") divided
# by the requests served. Unlike CPU time, this hardly moves with the VM's noise: it is what the code asks
# of the garbage collector. ROUNDS alternating rounds, medians (min–max).
#
# Knobs: ROUNDS [3] DURATION [5] CONNS [64] BENCH_POLICY [basic] BENCH_POLICY_APPEND [YAML added to it]
#        LOAD_CPU [0] PROXY_CPU [1] PEERS_DIR [/tmp/peers] (the harness copy: its forwarder)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUN=/tmp/pilotfish-alloc
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
PEERS_DIR=${PEERS_DIR:-/tmp/peers}
UP1=19411 UP2=19412 PORT=18591
OUTDIR=${OUTDIR:-$RUN/results/$(date +%Y%m%dT%H%M%S)}

source "$REPO/test/bench/origin.sh"
source "$REPO/test/bench/node-flags.sh"
setup_bench "$RUN" "$OUTDIR" "$LOAD_CPU" "$UP1" "$UP2"
PORT=$PORT ADMIN_PORT=$((PORT + 1000)) BENCH_POLICY=${BENCH_POLICY:-basic} node "$REPO/test/bench/start-for-bench.js" --write "$RUN/policy.yaml"
[[ -z ${BENCH_POLICY_APPEND:-} ]] || printf '%s\n' "$BENCH_POLICY_APPEND" >>"$RUN/policy.yaml"

measure() {  # measure NAME ROUND CMD...: one line "NAME REQUESTS BYTES SCAVENGES" into results.txt
  local name=$1 round=$2; shift 2
  local log="$OUTDIR/$name-r$round.gc.log"
  taskset -c "$PROXY_CPU" "$@" >"$log" 2>&1 &
  local pid=$!
  wait_serving "$PORT"
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d3s "http://127.0.0.1:$PORT/" >/dev/null
  local mark
  mark=$(wc -l <"$log")
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$PORT/" >"$OUTDIR/$name-r$round.wrk"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  local requests
  requests=$(awk '/ requests in /{print $1}' "$OUTDIR/$name-r$round.wrk")
  # --trace-gc lines: "... Scavenge 20.1 (35.2) -> 5.1 (36.2) MB, ..." (also Mark-Compact).
  tail -n +"$((mark + 1))" "$log" | awk -v name="$name" -v n="$requests" '
    match($0, /(Scavenge|Mark-Compact|Mark-sweep)[^0-9]*[0-9.]+ \([0-9.]+\) -> [0-9.]+/) {
      s = substr($0, RSTART, RLENGTH); sub(/^[^0-9]*/, "", s); split(s, f, /[ ()>-]+/)
      if (have) { d = f[1] - prev; if (d > 0) bytes += d * 1048576 }
      prev = f[3]; have = 1; if ($0 ~ /Scavenge/) scav++
    }
    END { printf "%s %d %.0f %d\n", name, n, bytes, scav }' >>"$OUTDIR/results.txt"
}

: >"$OUTDIR/results.txt"
for round in $(seq "$ROUNDS"); do
  measure pilotfish "$round" node "${PILOTFISH_NODE_FLAGS[@]}" --trace-gc "$REPO/dist/cmd/pilotfish.js" run --policy "$RUN/policy.yaml"
  PORT=$PORT measure forwarder "$round" node --trace-gc "$PEERS_DIR/proxies/undici-forwarder.js"
done
node - "$OUTDIR/results.txt" <<'JS'
const rows = require('node:fs').readFileSync(process.argv[2], 'utf8').trim().split('\n').map((l) => l.split(' '));
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
console.log('| target | bytes allocated per request | scavenges per 10k requests |\n|---|---:|---:|');
for (const name of ['pilotfish', 'forwarder']) {
  const mine = rows.filter((r) => r[0] === name);
  const perReq = mine.map((r) => Number(r[2]) / Number(r[1]));
  const scav = mine.map((r) => (Number(r[3]) * 1e4) / Number(r[1]));
  console.log(`| ${name} | ${median(perReq).toFixed(0)} (${Math.min(...perReq).toFixed(0)}–${Math.max(...perReq).toFixed(0)}) | ${median(scav).toFixed(1)} |`);
}
JS
