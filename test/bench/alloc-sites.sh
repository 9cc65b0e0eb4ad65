#!/usr/bin/env bash
# Where the garbage comes from (`BENCH_MODE=alloc-sites npm run bench`, or run this file): Pilotfish and the
# bare undici forwarder, in turn, alone on PROXY_CPU with V8's sampling heap profiler (heap-sampler.mjs,
# collected objects included), behind the nginx origin (1 KiB) with wrk -t1 -c$CONNS on LOAD_CPU: after a
# 2 s warm-up, DURATION seconds sampled; then alloc-sites-report.js prints bytes allocated per request by
# category and the top allocation sites of each. alloc.sh gives the exact total; this, where it comes from.
#
# Knobs: DURATION [5] CONNS [64] BENCH_POLICY [basic] BENCH_POLICY_APPEND [YAML added to it] PILOTFISH_ONLY [0]
#        LOAD_CPU [0] PROXY_CPU [1] PEERS_DIR [/tmp/peers] (the harness copy: its forwarder)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUN=/tmp/pilotfish-alloc-sites
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
PEERS_DIR=${PEERS_DIR:-/tmp/peers}
UP1=19431 UP2=19432 PORT=18611
OUTDIR=${OUTDIR:-$RUN/results/$(date +%Y%m%dT%H%M%S)}
SAMPLER="$REPO/test/bench/heap-sampler.mjs"

source "$REPO/test/bench/origin.sh"
source "$REPO/test/bench/node-flags.sh"
setup_bench "$RUN" "$OUTDIR" "$LOAD_CPU" "$UP1" "$UP2"
PORT=$PORT ADMIN_PORT=$((PORT + 1000)) BENCH_POLICY=${BENCH_POLICY:-basic} node "$REPO/test/bench/start-for-bench.js" --write "$RUN/policy.yaml"
[[ -z ${BENCH_POLICY_APPEND:-} ]] || printf '%s\n' "$BENCH_POLICY_APPEND" >>"$RUN/policy.yaml"

sample() {  # sample NAME CMD...: the command with the sampler preloaded, warmed up, sampled under load, stopped
  local name=$1; shift
  local out="$OUTDIR/$name.heapsamples.json"
  rm -f "$out"
  HEAP_SAMPLES_OUT=$out taskset -c "$PROXY_CPU" "$@" >"$OUTDIR/$name.log" 2>&1 &
  local pid=$!
  wait_serving "$PORT"
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$PORT/" >/dev/null
  kill -USR2 "$pid"
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$PORT/" >"$OUTDIR/$name-wrk.txt"
  kill -USR2 "$pid"
  for _ in $(seq 100); do [[ -s $out ]] && break; sleep 0.1; done
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  echo "$name $(awk '/ requests in /{print $1}' "$OUTDIR/$name-wrk.txt") $out" >>"$OUTDIR/samples.txt"
}

: >"$OUTDIR/samples.txt"
sample pilotfish node "${PILOTFISH_NODE_FLAGS[@]}" --import "$SAMPLER" "$REPO/dist/cmd/pilotfish.js" run --policy "$RUN/policy.yaml"
[[ ${PILOTFISH_ONLY:-0} == 1 ]] || PORT=$PORT sample forwarder node --import "$SAMPLER" "$PEERS_DIR/proxies/undici-forwarder.js"
node "$REPO/test/bench/alloc-sites-report.js" "$OUTDIR/samples.txt"
