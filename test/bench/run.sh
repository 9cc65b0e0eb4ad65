#!/usr/bin/env bash
# `npm run bench`: Pilotfish beside the proxies a user would pick instead, measured by the shared peers
# harness (../shared/bench/run.sh, see its README) exactly like them. See test/bench/README.md.
#
#   npm run bench                                        # all peers + pilotfish (~12 min)
#   BENCH_POLICY=full npm run bench                      # ... + pilotfish-full instead (every mechanism on)
#   BENCH_POLICY=both TARGETS="direct undici-forwarder" npm run bench   # both, each in its own harness run
#   ROUNDS=1 DURATION=5 TARGETS=direct npm run bench     # a quick smoke run
#   BENCH_MODE=h2c npm run bench                         # h2c → h2c with h2load instead: test/bench/h2c.sh
#   BENCH_MODE=mtls npm run bench                        # two sidecars, a plaintext hop against mTLS: test/bench/mtls.sh
#   BENCH_MODE=soak npm run bench                        # 5 min of load each, Pilotfish against the forwarder: test/bench/soak.sh
#   BENCH_MODE=profile npm run bench                     # where the time goes (--cpu-prof), against the forwarder: test/bench/profile.sh
#   BENCH_MODE=alloc npm run bench                       # garbage per request (--trace-gc), against the forwarder: test/bench/alloc.sh
#   BENCH_MODE=alloc-sites npm run bench                 # where that garbage is allocated (sampled), against the forwarder: test/bench/alloc-sites.sh
#   BENCH_MODE=idle-rss npm run bench                    # resident memory at rest, beside a bare node: test/bench/idle-rss.sh
#   BENCH_MODE=instructions npm run bench                # instructions per request under callgrind, basic/full/forwarder: test/bench/instructions.sh
#   BENCH_MODE=threads npm run bench                     # CPU per request by thread, long-lived, policy against policy: test/bench/threads.sh
#
# Knobs: BENCH_POLICY=basic|full|both [basic]; PROXY_PORT [18090] (admin on PROXY_PORT+1000);
# PEERS_DIR [/tmp/peers] (the harness's copy); SHARED_BENCH [<repo>/../shared/bench]. Everything else
# (TARGETS, ROUNDS, DURATION, WARMUP, CONNS, CONN_LIST, *_CPU, *_PORT, OUTDIR, FOREIGN_MAX_PCT, MAX_REDO,
# QUIET_WAIT_MAX) passes through to the harness; TARGETS defaults to the harness's: every peer.
#
# The harness takes one PROXY_CMD per run, so BENCH_POLICY=both runs it twice, one after the other, each
# run with its own direct and peer baselines: compare pilotfish and pilotfish-full by their ratios to
# `direct` and by CPU µs/request within each run, not by raw requests/s across runs.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# The h2c and mtls modes are their own small scripts: the harness speaks HTTP/1.1 (wrk) only, and runs one
# proxy, not a pair of sidecars.
case ${BENCH_MODE:-http1} in
  http1) ;;
  h2c) exec bash "$REPO/test/bench/h2c.sh" ;;
  mtls) exec bash "$REPO/test/bench/mtls.sh" ;;
  soak) exec bash "$REPO/test/bench/soak.sh" ;;
  profile) exec bash "$REPO/test/bench/profile.sh" ;;
  alloc) exec bash "$REPO/test/bench/alloc.sh" ;;
  alloc-sites) exec bash "$REPO/test/bench/alloc-sites.sh" ;;
  idle-rss) exec bash "$REPO/test/bench/idle-rss.sh" ;;
  instructions) exec bash "$REPO/test/bench/instructions.sh" ;;
  threads) exec bash "$REPO/test/bench/threads.sh" ;;
  *) echo "BENCH_MODE must be http1, h2c, mtls, soak, profile, alloc, alloc-sites, idle-rss, instructions or threads (got '$BENCH_MODE')" >&2; exit 2 ;;
esac
SHARED_BENCH=${SHARED_BENCH:-$REPO/../shared/bench}
PEERS_DIR=${PEERS_DIR:-/tmp/peers}
BENCH_POLICY=${BENCH_POLICY:-basic}
export PROXY_PORT=${PROXY_PORT:-18090}

case $BENCH_POLICY in
  basic) MODES=(basic) ;;
  full) MODES=(full) ;;
  both) MODES=(basic full) ;;
  tracing) MODES=(tracing) ;;
  *) echo "BENCH_POLICY must be basic, full, both or tracing (got '$BENCH_POLICY')" >&2; exit 2 ;;
esac

# ---------------------------------------------------------------- tools (apt, only what is missing)
source "$REPO/test/support/install/apt.sh"
missing=()
for pair in wrk:wrk nginx:nginx haproxy:haproxy curl:curl taskset:util-linux flock:util-linux; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt_install "${missing[@]}"
fi

# ---------------------------------------------------------------- the harness, copied (shared/ is read-only)
[[ -f $SHARED_BENCH/run.sh ]] || { echo "no peers harness at $SHARED_BENCH (set SHARED_BENCH)" >&2; exit 1; }
if [[ -d $PEERS_DIR/node_modules ]] && cmp -s "$SHARED_BENCH/package-lock.json" "$PEERS_DIR/package-lock.json"; then
  # Same dependencies: refresh the scripts only, keep node_modules and earlier results.
  (cd "$SHARED_BENCH" && tar --exclude=./node_modules --exclude=./results -cf - .) | (cd "$PEERS_DIR" && tar -xf -)
  chmod -R u+w "$PEERS_DIR"
else
  echo "copying $SHARED_BENCH to $PEERS_DIR and installing its dependencies (npm ci)"
  mkdir -p "$PEERS_DIR"
  (cd "$SHARED_BENCH" && tar --exclude=./node_modules --exclude=./results -cf - .) | (cd "$PEERS_DIR" && tar -xf -)
  chmod -R u+w "$PEERS_DIR"
  (cd "$PEERS_DIR" && npm ci --no-audit --no-fund)
fi

# ---------------------------------------------------------------- Pilotfish, built
(cd "$REPO" && npm run build --silent)
[[ -f $REPO/dist/cmd/pilotfish.js ]] || { echo "build produced no dist/cmd/pilotfish.js" >&2; exit 1; }

# ---------------------------------------------------------------- measure
POLICY_DIR=$(mktemp -d /tmp/pilotfish-bench.XXXXXX)
trap 'rm -rf "$POLICY_DIR"' EXIT

# Our own names in a user's TARGETS would be unknown to the harness: it appends PROXY_NAME itself.
if [[ -n ${TARGETS:-} ]]; then
  kept=()
  for t in $TARGETS; do [[ $t == pilotfish || $t == pilotfish-full ]] || kept+=("$t"); done
  TARGETS=${kept[*]:-direct}
  export TARGETS
fi
BASE_OUTDIR=${OUTDIR:-}

pilotfish_cmd() {  # pilotfish_cmd MODE NAME: the harness's command for one policy variant
  printf 'env BENCH_POLICY=%s BENCH_POLICY_FILE=%q bash %q' "$1" "$POLICY_DIR/$2.yaml" "$REPO/test/bench/pilotfish.sh"
}

if [[ ${MODES[0]} == tracing ]]; then
  # Tracing off, at 1% and at 100%, in the same interleaved rounds (a patched copy of the harness takes
  # the two extra proxies), exporting to a minimal OTLP sink on the load generator's core.
  node "$REPO/test/bench/extra-proxies.js" "$PEERS_DIR/run.sh"
  taskset -c "${LOAD_CPU:-0}" node "$REPO/test/bench/start-for-bench.js" --otlp-sink >"$POLICY_DIR/sink.log" 2>&1 &
  sink=$!
  trap 'kill $sink 2>/dev/null; rm -rf "$POLICY_DIR"' EXIT
  EXTRA_PROXIES="pilotfish-tracing-1|$((PROXY_PORT + 2))|$(pilotfish_cmd tracing-1 pilotfish-tracing-1)
pilotfish-tracing-100|$((PROXY_PORT + 4))|$(pilotfish_cmd tracing-100 pilotfish-tracing-100)" \
    PROXY_NAME=pilotfish-tracing-off PROXY_CMD="$(pilotfish_cmd tracing-off pilotfish-tracing-off)" \
    bash "$PEERS_DIR/run.sh"
  kill "$sink"; wait "$sink" 2>/dev/null || true
  cat "$POLICY_DIR/sink.log"
  exit 0
fi

for mode in "${MODES[@]}"; do
  name=pilotfish; [[ $mode == full ]] && name=pilotfish-full
  echo "=== $name (BENCH_POLICY=$mode) on 127.0.0.1:$PROXY_PORT, admin :$((PROXY_PORT + 1000))"
  outdir_env=()
  [[ -n $BASE_OUTDIR ]] && outdir_env=(OUTDIR="$BASE_OUTDIR/$name")
  # pilotfish.sh writes the policy from the harness's PORT and UPSTREAMS, then execs Pilotfish, so the
  # harness measures Pilotfish's own process (start-for-bench.js alone would leave a node parent running).
  env "${outdir_env[@]}" BENCH_POLICY="$mode" BENCH_POLICY_FILE="$POLICY_DIR/$name.yaml" \
    PROXY_NAME="$name" PROXY_CMD="bash $(printf %q "$REPO/test/bench/pilotfish.sh")" \
    bash "$PEERS_DIR/run.sh"
done
