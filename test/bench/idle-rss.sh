#!/usr/bin/env bash
# Idle resident memory: Pilotfish started on the bench's basic policy and left alone (no request), its VmRSS
# (with the node flags it ships with, node-flags.sh) read from /proc at SAMPLES seconds after start, ROUNDS times; a bare node (`setInterval` only) sampled the
# same way beside it, in the same rounds, for the floor, and `libraries-only` (idle-deps.js: the dependencies
# the sidecar loads, loaded as it loads them, and none of its own modules). Prints the median (min–max) per
# time point, in MiB.
# Builds nothing: run `npm run build` first. The upstream endpoints are never dialled at idle, so no origin.
#
# Knobs: ROUNDS [5] SAMPLES ["3 10 30"] (seconds after start) PORT [18590] ADMIN_PORT [PORT + 1000]
#        NODE_FLAGS [none] (added to both node command lines, e.g. "--max-semi-space-size=4")
#        ENTRY [dist/cmd/pilotfish.js] (another build to compare, e.g. a copy of dist/ made before a change)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$REPO/test/bench/node-flags.sh"
ROUNDS=${ROUNDS:-5}
SAMPLES=${SAMPLES:-3 10 30}
PORT=${PORT:-18590}
ADMIN_PORT=${ADMIN_PORT:-$((PORT + 1000))}
ENTRY=${ENTRY:-$REPO/dist/cmd/pilotfish.js}
read -r -a FLAGS <<<"${NODE_FLAGS:-}"
RUN=$(mktemp -d /tmp/pilotfish-idle-rss.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$RUN"' EXIT

[[ -f $ENTRY ]] || { echo "idle-rss: no $ENTRY: run npm run build" >&2; exit 2; }
PORT=$PORT ADMIN_PORT=$ADMIN_PORT UPSTREAMS=http://127.0.0.1:1,http://127.0.0.1:2 \
  node "$REPO/test/bench/start-for-bench.js" --write "$RUN/policy.yaml"

rss_mib() {  # rss_mib PID: VmRSS in MiB, one decimal
  awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

# Both processes start together each round, so they share the round's conditions.
for round in $(seq "$ROUNDS"); do
  start=$(date +%s.%N)
  node "${PILOTFISH_NODE_FLAGS[@]}" "${FLAGS[@]}" "$ENTRY" run --policy "$RUN/policy.yaml" >"$RUN/pilotfish.log" 2>&1 &
  ours=$!
  node "${FLAGS[@]}" -e 'setInterval(() => {}, 1e3)' &
  bare=$!
  node "${PILOTFISH_NODE_FLAGS[@]}" "${FLAGS[@]}" "$REPO/test/bench/idle-deps.js" &
  deps=$!
  PIDS=("$ours" "$bare" "$deps")
  for t in $SAMPLES; do
    sleep "$(echo "$start + $t - $(date +%s.%N)" | bc)"
    kill -0 "$ours" 2>/dev/null || { echo "idle-rss: pilotfish exited:" >&2; cat "$RUN/pilotfish.log" >&2; exit 1; }
    echo "pilotfish $t $(rss_mib "$ours")" >>"$RUN/samples.txt"
    echo "bare-node $t $(rss_mib "$bare")" >>"$RUN/samples.txt"
    echo "libraries-only $t $(rss_mib "$deps")" >>"$RUN/samples.txt"
  done
  kill -TERM "$ours" "$bare" "$deps"; wait "$ours" "$bare" "$deps" 2>/dev/null || true
  PIDS=()
  echo "round $round/$ROUNDS: $(grep -c . "$RUN/samples.txt") samples" >&2
done

# One row per process, one column per time point: median (min–max).
node - "$RUN/samples.txt" "$SAMPLES" "$ROUNDS" <<'JS'
const [file, samples, rounds] = process.argv.slice(2);
const times = samples.trim().split(/\s+/);
const by = new Map();
for (const line of require('fs').readFileSync(file, 'utf8').trim().split('\n')) {
  const [name, t, mib] = line.split(' ');
  const key = `${name} ${t}`;
  by.set(key, [...(by.get(key) ?? []), Number(mib)]);
}
const cell = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  return `${m.toFixed(1)} (${s[0].toFixed(1)}–${s.at(-1).toFixed(1)})`;
};
console.log(`\nVmRSS in MiB, median (min–max) of ${rounds} rounds\n`);
console.log(`| process | ${times.map((t) => `${t} s`).join(' | ')} |`);
console.log(`|---|${times.map(() => '---').join('|')}|`);
for (const name of ['pilotfish', 'libraries-only', 'bare-node']) console.log(`| ${name} | ${times.map((t) => cell(by.get(`${name} ${t}`))).join(' | ')} |`);
JS
