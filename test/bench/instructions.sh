#!/usr/bin/env bash
# Instructions per request (`BENCH_MODE=instructions npm run bench`, or run this file): Pilotfish on the
# basic policy, Pilotfish with every mechanism on, and the bare undici forwarder, in turn, under valgrind's
# callgrind, behind the nginx origin (1 KiB). After a warm-up batch (h2load --h1 -n WARM), the counters are
# zeroed, a batch of REQUESTS is sent, and the instructions executed meanwhile are divided by the requests
# that succeeded: on the main thread (the one to read: JavaScript, node:http, undici), and on every thread
# (V8's compiler and GC helpers too, which swing by a quarter from run to run).
#
# Why: CPU time on this VM moves ±30% from one round to the next (steal, frequency), so a 5% difference
# between two policies drowns in it; an instruction count repeats to about 2%. It is not time (a cache
# miss costs more than an add) and valgrind serialises threads, so it ranks and sizes code paths, and the
# peer harness (`npm run bench`) stays the measure of CPU per request.
#
# Knobs: ROUNDS [2] REQUESTS [3000] WARM [4000] CONNS [16] PEERS_DIR [/tmp/peers] (the harness copy: its forwarder)
#        TARGETS ["pilotfish pilotfish-full forwarder"]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUN=/tmp/pilotfish-instructions
ROUNDS=${ROUNDS:-2}
REQUESTS=${REQUESTS:-3000}
WARM=${WARM:-4000}
CONNS=${CONNS:-16}
PEERS_DIR=${PEERS_DIR:-/tmp/peers}
TARGETS=${TARGETS:-pilotfish pilotfish-full forwarder}
UP1=19511 UP2=19512 PORT=18691
OUTDIR=${OUTDIR:-$RUN/results/$(date +%Y%m%dT%H%M%S)}

source "$REPO/test/bench/origin.sh"
source "$REPO/test/bench/node-flags.sh"
for pair in valgrind:valgrind callgrind_control:valgrind h2load:nghttp2-client; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || apt_install "${pair#*:}"
done
setup_bench "$RUN" "$OUTDIR" 0 "$UP1" "$UP2"
for mode in basic full; do
  PORT=$PORT ADMIN_PORT=$((PORT + 1000)) BENCH_POLICY=$mode node "$REPO/test/bench/start-for-bench.js" --write "$RUN/policy-$mode.yaml"
done

# The command line of a target.
command_of() {
  case $1 in
    pilotfish) echo "node ${PILOTFISH_NODE_FLAGS[*]} $REPO/dist/cmd/pilotfish.js run --policy $RUN/policy-basic.yaml" ;;
    pilotfish-full) echo "node ${PILOTFISH_NODE_FLAGS[*]} $REPO/dist/cmd/pilotfish.js run --policy $RUN/policy-full.yaml" ;;
    forwarder) echo "node $PEERS_DIR/proxies/undici-forwarder.js" ;;
    *) echo "unknown target $1" >&2; exit 2 ;;
  esac
}

# succeeded OUTPUT: the requests h2load reports as succeeded.
succeeded() { awk '/^requests:/{for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^succeeded/) print $i}' "$1"; }

measure() {  # measure NAME ROUND: one line "NAME REQUESTS MAIN_THREAD ALL_THREADS" into results.txt
  local name=$1 round=$2 out="$OUTDIR/$1-r$2"
  # shellcheck disable=SC2046 # the command line, word-split on purpose
  PORT=$PORT valgrind --tool=callgrind --smc-check=all-non-file --separate-threads=yes --callgrind-out-file="$out.cg" $(command_of "$name") >"$out.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 600); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.2; done
  h2load --h1 -n "$WARM" -c "$CONNS" "http://127.0.0.1:$PORT/" >"$out.warm"
  callgrind_control -z "$pid" >/dev/null 2>&1
  h2load --h1 -n "$REQUESTS" -c "$CONNS" "http://127.0.0.1:$PORT/" >"$out.h2load"
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  # The dump after the zeroing is numbered, one file per thread (-01 the main thread); a totals line
  # is that thread's instructions (Ir) since the zeroing.
  local main all
  main=$(awk '/^totals:/{print $2}' "$out".cg.1-01)
  all=$(cat "$out".cg.1-* | awk '/^totals:/{n += $2} END {print n}')
  echo "$name $(succeeded "$out.h2load") $main $all" >>"$OUTDIR/results.txt"
}

: >"$OUTDIR/results.txt"
for round in $(seq "$ROUNDS"); do
  for name in $TARGETS; do measure "$name" "$round"; done
done
node - "$OUTDIR/results.txt" "$TARGETS" <<'JS'
const rows = require('node:fs').readFileSync(process.argv[2], 'utf8').trim().split('\n').map((l) => l.split(' '));
const names = process.argv[3].split(/\s+/).filter(Boolean);
const perReq = (name, col) => rows.filter((r) => r[0] === name).map((r) => Number(r[col]) / Number(r[1]));
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const k = (x) => `${(x / 1000).toFixed(1)}k`;
const cell = (xs, base) => `${k(median(xs))} (${k(Math.min(...xs))}–${k(Math.max(...xs))}) | ${(median(xs) / base).toFixed(3)}`;
const [mainBase, allBase] = [2, 3].map((col) => median(perReq(names[0], col)));
console.log(`| target | main thread, instructions per request | × ${names[0]} | all threads | × ${names[0]} |\n|---|---:|---:|---:|---:|`);
for (const name of names) console.log(`| ${name} | ${cell(perReq(name, 2), mainBase)} | ${cell(perReq(name, 3), allBase)} |`);
JS
echo "raw: $OUTDIR"
