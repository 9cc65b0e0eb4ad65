#!/usr/bin/env bash
# Where the time goes (`BENCH_MODE=profile npm run bench`, or run this file): Pilotfish and the bare undici
# forwarder, each in turn alone on PROXY_CPU under `node --cpu-prof`, behind an nginx origin (1 KiB) with
# wrk -t1 -c$CONNS on LOAD_CPU for DURATION seconds after a 2 s warm-up; then profile-report.js prints busy
# self time per request by category (socket syscalls, node:http, undici, V8, our modules...) for both.
# The profiler inflates every figure; compare the two columns, and shares, not absolute µs.
#
# Knobs: DURATION [10] CONNS [64] BENCH_POLICY [basic] BENCH_POLICY_APPEND [YAML added to it] PILOTFISH_ONLY [0] LOAD_CPU [0] PROXY_CPU [1]
#        PEERS_DIR [/tmp/peers] (the harness copy `npm run bench` makes, made here if missing: the forwarder)
#        PEER_SCRIPT [the harness's undici-forwarder.js] another peer to profile beside Pilotfish, named after
#        its file (e.g. test/bench/mesh-floor.js, the floor under the default policy)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUN=/tmp/pilotfish-profile
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
PEERS_DIR=${PEERS_DIR:-/tmp/peers}
UP1=19211 UP2=19212 PORT=18391
OUTDIR=${OUTDIR:-$RUN/results/$(date +%Y%m%dT%H%M%S)}

source "$REPO/test/bench/origin.sh"
setup_bench "$RUN" "$OUTDIR" "$LOAD_CPU" "$UP1" "$UP2"
# The forwarder ends on SIGTERM without a handler, which would lose its profile: this wrapper exits cleanly
# (import(), so the peer may be CommonJS or a module).
PEER_SCRIPT=$(realpath "${PEER_SCRIPT:-$PEERS_DIR/proxies/undici-forwarder.js}")
PEER_NAME=$(basename "$PEER_SCRIPT" .js)
if [[ $PEER_NAME == undici-forwarder ]]; then PEER_NAME=forwarder; fi
printf "process.on('SIGTERM', () => process.exit(0));\nimport('%s');\n" "$PEER_SCRIPT" >"$RUN/forwarder-profiled.cjs"

profile() {  # profile NAME CMD...: the command under --cpu-prof, loaded, then stopped
  local name=$1; shift
  rm -rf "$OUTDIR/$name" && mkdir -p "$OUTDIR/$name"   # a reused OUTDIR: only this run's profile
  taskset -c "$PROXY_CPU" "$@" >"$OUTDIR/$name.log" 2>&1 &
  local pid=$!
  wait_serving "$PORT"
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$PORT/" >"$OUTDIR/$name-warmup.txt"
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$PORT/" >"$OUTDIR/$name-wrk.txt"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  local n=0 f
  for f in "$OUTDIR/$name-warmup.txt" "$OUTDIR/$name-wrk.txt"; do n=$((n + $(awk '/ requests in /{print $1}' "$f"))); done
  echo "$name $n $(ls "$OUTDIR/$name"/*.cpuprofile)" >>"$OUTDIR/profiles.txt"
}
PORT=$PORT ADMIN_PORT=$((PORT + 1000)) BENCH_POLICY=${BENCH_POLICY:-basic} node "$REPO/test/bench/start-for-bench.js" --write "$RUN/policy.yaml"
[[ -z ${BENCH_POLICY_APPEND:-} ]] || printf '%s\n' "$BENCH_POLICY_APPEND" >>"$RUN/policy.yaml"
: >"$OUTDIR/profiles.txt"
source "$REPO/test/bench/node-flags.sh"
profile pilotfish node "${PILOTFISH_NODE_FLAGS[@]}" --cpu-prof --cpu-prof-dir="$OUTDIR/pilotfish" "$REPO/dist/cmd/pilotfish.js" run --policy "$RUN/policy.yaml"
[[ ${PILOTFISH_ONLY:-0} == 1 ]] || PORT=$PORT profile "$PEER_NAME" node --cpu-prof --cpu-prof-dir="$OUTDIR/$PEER_NAME" "$RUN/forwarder-profiled.cjs"
node "$REPO/test/bench/profile-report.js" "$OUTDIR/profiles.txt"
