#!/usr/bin/env bash
# CPU per request by thread (`BENCH_MODE=threads npm run bench`, or run this file): one long-lived Pilotfish
# per policy in MODES, all pinned to PROXY_CPU, warmed for 10 s each, then ROUNDS alternating rounds of wrk
# -t1 -c$CONNS for DURATION s behind the nginx origin (1 KiB). For each round: user and system time of the
# main thread (JavaScript, node:http, undici, GC: scavenges run there under the shipped flags) and of every
# other thread (V8's compiler and GC helpers, libuv's pool), from /proc/PID/task/*/stat, per request.
# It says where a difference between two policies is spent; the peer harness stays the measure of the bars.
#
# MODES: basic, full, and full-no<MECHANISM> (full without it): full-nohedge, full-nofault, full-nobreaker,
#        full-nohealth, full-norate, full-nobulkhead, full-nooutlier.
# Knobs: MODES ["basic full"] ROUNDS [6] DURATION [8] CONNS [64] LOAD_CPU [0] PROXY_CPU [1]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUN=/tmp/pilotfish-threads
PEERS_DIR=${PEERS_DIR:-/tmp/peers}
MODES=${MODES:-basic full}
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-8}
CONNS=${CONNS:-64}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
UP1=19711 UP2=19712 FIRST_PORT=18891

source "$REPO/test/bench/origin.sh"
source "$REPO/test/bench/node-flags.sh"
setup_bench "$RUN" "$RUN" "$LOAD_CPU" "$UP1" "$UP2"

# The policy line a full-no<MECHANISM> mode leaves out (with the lines nested under it).
dropped() {
  case $1 in
    full-nohedge) echo 'hedge:' ;; full-nofault) echo 'fault:' ;; full-nobreaker) echo 'circuitBreaker:' ;;
    full-nohealth) echo 'healthCheck:' ;; full-norate) echo 'rateLimit:' ;; full-nobulkhead) echo 'bulkhead:' ;;
    full-nooutlier) echo 'outlierDetection:' ;; basic | full) echo '' ;;
    *) echo "unknown mode $1" >&2; exit 2 ;;
  esac
}

declare -A PID PORT_OF
port=$FIRST_PORT
for mode in $MODES; do
  policy=$RUN/policy-$mode.yaml
  PORT=$port ADMIN_PORT=$((port + 1000)) BENCH_POLICY=${mode%%-*} node "$REPO/test/bench/start-for-bench.js" --write "$policy"
  drop=$(dropped "$mode")
  if [[ -n $drop ]]; then
    awk -v drop="$drop" 'skip && /^      / { next } { skip = 0 } index($0, drop) { skip = 1; next } { print }' "$policy" >"$policy.tmp"
    mv "$policy.tmp" "$policy"
  fi
  taskset -c "$PROXY_CPU" node "${PILOTFISH_NODE_FLAGS[@]}" "$REPO/dist/cmd/pilotfish.js" run --policy "$policy" >"$RUN/$mode.log" 2>&1 &
  PID[$mode]=$!
  PIDS+=("$!")
  PORT_OF[$mode]=$port
  port=$((port + 10))
done

# ticks PID: "MAIN_USER MAIN_SYS OTHERS" in clock ticks (the main thread's TID is the PID).
ticks() {
  local t
  for t in /proc/"$1"/task/*; do echo "${t##*/} $(awk '{print $14, $15}' "$t/stat")"; done |
    awk -v pid="$1" '$1 == pid { u += $2; s += $3; next } { o += $2 + $3 } END { print u + 0, s + 0, o + 0 }'
}

for mode in $MODES; do
  wait_serving "${PORT_OF[$mode]}"
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d10s "http://127.0.0.1:${PORT_OF[$mode]}/" >/dev/null
done
: >"$RUN/results.txt"
for round in $(seq "$ROUNDS"); do
  for mode in $MODES; do
    url="http://127.0.0.1:${PORT_OF[$mode]}/"
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "$url" >/dev/null
    read -r u0 s0 o0 < <(ticks "${PID[$mode]}")
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "$url" >"$RUN/wrk.txt"
    read -r u1 s1 o1 < <(ticks "${PID[$mode]}")
    n=$(awk '/ requests in /{print $1}' "$RUN/wrk.txt")
    echo "$mode $round $n $((u1 - u0)) $((s1 - s0)) $((o1 - o0))" >>"$RUN/results.txt"
  done
done
node - "$RUN/results.txt" "$MODES" "$(getconf CLK_TCK)" <<'JS'
const [file, modesText, tck] = process.argv.slice(2);
const rows = require('node:fs').readFileSync(file, 'utf8').trim().split('\n').map((l) => l.split(' '));
const modes = modesText.split(/\s+/).filter(Boolean);
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const us = (r, col) => (Number(r[col]) * 1e6) / Number(tck) / Number(r[2]);
const cell = (xs, digits = 1) => `${median(xs).toFixed(digits)} (${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)})`;
// Each round's total against the first mode's in the same round.
const totals = (mode) => rows.filter((r) => r[0] === mode).map((r) => us(r, 3) + us(r, 4) + us(r, 5));
const base = totals(modes[0]);
console.log(`| mode | main thread user µs/req | main thread system | other threads | total | × ${modes[0]}, per round |\n|---|---:|---:|---:|---:|---:|`);
for (const mode of modes) {
  const mine = rows.filter((r) => r[0] === mode);
  const ratio = totals(mode).map((x, i) => x / base[i]);
  console.log(`| ${mode} | ${cell(mine.map((r) => us(r, 3)))} | ${cell(mine.map((r) => us(r, 4)))} | ${cell(mine.map((r) => us(r, 5)))} | ${cell(totals(mode))} | ${cell(ratio, 2)} |`);
}
JS
