#!/usr/bin/env bash
# The soak: is Pilotfish's cost flat over time? (`BENCH_MODE=soak npm run bench`, or run this file.)
#
# One Pilotfish process and one bare undici forwarder (the shared harness's, the control for the machine's
# own drift) stay up for the whole run, each pinned alone to PROXY_CPU, behind an nginx origin with the
# harness's 1 KiB body. Load (wrk -t1 -c$CONNS, keep-alive, pinned with the origin to LOAD_CPU) goes to
# them in alternating SEGMENT-second slices until each has had MINUTES minutes of it, so both see the
# same machine. Per slice: requests/s, proxy CPU µs per request, RSS and, for Pilotfish, V8's heap
# (process metrics from its /metrics). Prints a per-minute table and the verdicts the performance issue
# asks for: Pilotfish's last minute ≥ 0.95× its first, RSS growth after warm-up ≤ 10 MiB.
#
# Knobs: MINUTES [5] SEGMENT [30] CONNS [64] BENCH_POLICY [basic] LOAD_CPU [0] PROXY_CPU [1]
#        PEERS_DIR [/tmp/peers] (the harness copy `npm run bench` makes, made here if missing: the forwarder)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUN=/tmp/pilotfish-soak
MINUTES=${MINUTES:-5}
SEGMENT=${SEGMENT:-30}
CONNS=${CONNS:-64}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
PEERS_DIR=${PEERS_DIR:-/tmp/peers}
UP1=19201 UP2=19202 PF_PORT=18291 FWD_PORT=18292 ADMIN_PORT=19291
OUTDIR=${OUTDIR:-$RUN/results/$(date +%Y%m%dT%H%M%S)}
CLK_TCK=$(getconf CLK_TCK)

source "$REPO/test/bench/origin.sh"
setup_bench "$RUN" "$OUTDIR" "$LOAD_CPU" "$UP1" "$UP2"
PORT=$PF_PORT ADMIN_PORT=$ADMIN_PORT BENCH_POLICY=${BENCH_POLICY:-basic} node "$REPO/test/bench/start-for-bench.js" --write "$RUN/policy.yaml"
source "$REPO/test/bench/node-flags.sh"
taskset -c "$PROXY_CPU" node "${PILOTFISH_NODE_FLAGS[@]}" "$REPO/dist/cmd/pilotfish.js" run --policy "$RUN/policy.yaml" >"$RUN/pilotfish.log" 2>&1 &
PF=$!; PIDS+=($PF)
(cd "$PEERS_DIR" && PORT=$FWD_PORT exec taskset -c "$PROXY_CPU" node proxies/undici-forwarder.js) >"$RUN/forwarder.log" 2>&1 &
FWD=$!; PIDS+=($FWD)
for port in $PF_PORT $FWD_PORT; do
  wait_serving "$port"
done

ticks() { local a; read -r -a a < <(sed 's/.*) //' "/proc/$1/stat"); echo $((a[11] + a[12])); }
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
heap_mib() {  # V8 heap used, from Pilotfish's own process metrics
  curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^nodejs_heap_size_used_bytes /{printf "%.1f", $2 / 1048576}'
}
JSONL=$OUTDIR/results.jsonl; : >"$JSONL"
slice() {  # slice N NAME PID PORT
  local n=$1 name=$2 pid=$3 port=$4 t0 t1 reqs rps
  t0=$(ticks "$pid")
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SEGMENT}s" "http://127.0.0.1:$port/" >"$OUTDIR/$name-$n.txt"
  t1=$(ticks "$pid")
  reqs=$(awk '/ requests in /{print $1}' "$OUTDIR/$name-$n.txt")
  rps=$(awk '/^Requests\/sec:/{print $2}' "$OUTDIR/$name-$n.txt")
  printf '{"slice":%d,"target":"%s","seconds":%d,"requests":%d,"rps":%s,"cpu_us_per_req":%.1f,"rss_mib":%.1f,"heap_mib":%s}\n' \
    "$n" "$name" "$((n * SEGMENT))" "$reqs" "$rps" "$(echo "($t1 - $t0) * 1000000 / $CLK_TCK / $reqs" | bc -l)" \
    "$(echo "$(rss_kb "$pid") / 1024" | bc -l)" "$([[ $name == pilotfish ]] && heap_mib || echo null)" | tee -a "$JSONL"
}
SLICES=$((MINUTES * 60 / SEGMENT))
echo "soak: $MINUTES min of wrk -t1 -c$CONNS per target in ${SEGMENT}s slices, alternating; node $(node --version); results in $OUTDIR"
for n in $(seq 1 "$SLICES"); do
  slice "$n" pilotfish "$PF" "$PF_PORT"
  slice "$n" forwarder "$FWD" "$FWD_PORT"
done
node "$REPO/test/bench/soak-report.js" "$JSONL" "$SEGMENT"
