#!/usr/bin/env bash
# `BENCH_MODE=h2c npm run bench`: Pilotfish proxying cleartext HTTP/2 (h2c → h2c), measured beside the
# same origin direct and beside Pilotfish over HTTP/1.1 in the same run, so its cost per request can be
# quoted as a ratio to the HTTP/1.1 figure. See test/bench/README.md ("h2c mode").
#
# An nginx origin (1 KiB body, two endpoints, like the peers harness's) listens twice: h2c with prior
# knowledge on H2_UP1/H2_UP2 and HTTP/1.1 on H1_UP1/H1_UP2. Targets, measured in ROUNDS interleaved rounds:
#   direct-h2c     h2load -c1 -m$STREAMS straight to the h2c origin
#   pilotfish-h2c  h2load -c1 -m$STREAMS to Pilotfish, upstream `protocol: h2c` over the two h2c origins
#   floor-h2c      h2load -c1 -m$STREAMS to test/bench/h2-floor.js: node:http2 alone, no policy logic (the floor)
#   direct-h1      wrk -t1 -c$H1_CONNS straight to the HTTP/1.1 origin
#   pilotfish-h1   wrk -t1 -c$H1_CONNS to Pilotfish with the basic bench policy over the HTTP/1.1 origins
# Pinned like the harness: load generator and origin on CPU 0, Pilotfish on CPU 1. Per run: requests/s,
# Pilotfish's CPU µs per request (utime+stime from /proc/PID/stat) and its peak RSS (VmHWM, reset first).
#
# Knobs: ROUNDS [5] DURATION [10] WARMUP [2] STREAMS [100] H1_CONNS [64] TARGETS [all four]
#   LOAD_CPU/UPSTREAM_CPU [0] PROXY_CPU [1]  H2_UP1_PORT/H2_UP2_PORT [19101/19102]
#   H1_UP1_PORT/H1_UP2_PORT [19103/19104]  H2C_PROXY_PORT [18093] H1_PROXY_PORT [18094] (admin: +1000)
#   FLOOR_PORT [18095]
#   FLOOR_NODE_FLAGS [none]: node flags for the floor (e.g. --trace-gc)
#   VARIANT_NODE_FLAGS, VARIANT_BUILD: a variant of Pilotfish measured in the same rounds, as two more targets,
#   pilotfish-h2c-v and pilotfish-h1-v (ports +20), each run with these node flags instead of the shipped
#   ones (node-flags.sh) and/or from another build's tree (a copy holding dist/ and test/bench/); the
#   summary then gives both builds' efficiency, and per-round ratios variant ÷ base
#   FOREIGN_MAX_PCT [8] MAX_REDO [3] (a run during which other processes used more than FOREIGN_MAX_PCT % of
#   a core is redone, up to MAX_REDO times, then kept and flagged)
#   OUTDIR [/tmp/pilotfish-h2c-bench/results/<timestamp>]
# Until the proxy speaks h2c, TARGETS="direct-h2c direct-h1" measures the origin alone.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUN=/tmp/pilotfish-h2c-bench
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
STREAMS=${STREAMS:-100}
H1_CONNS=${H1_CONNS:-64}
LOAD_CPU=${LOAD_CPU:-0}
UPSTREAM_CPU=${UPSTREAM_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
H2_UP1_PORT=${H2_UP1_PORT:-19101}
H2_UP2_PORT=${H2_UP2_PORT:-19102}
H1_UP1_PORT=${H1_UP1_PORT:-19103}
H1_UP2_PORT=${H1_UP2_PORT:-19104}
H2C_PROXY_PORT=${H2C_PROXY_PORT:-18093}
H1_PROXY_PORT=${H1_PROXY_PORT:-18094}
FLOOR_PORT=${FLOOR_PORT:-18095}
FOREIGN_MAX_PCT=${FOREIGN_MAX_PCT:-8}
MAX_REDO=${MAX_REDO:-3}
VARIANT_BUILD=${VARIANT_BUILD:-}
if [[ -n ${VARIANT_NODE_FLAGS+set} || -n $VARIANT_BUILD ]]; then
  TARGETS=${TARGETS:-"direct-h2c floor-h2c pilotfish-h2c pilotfish-h2c-v direct-h1 pilotfish-h1 pilotfish-h1-v"}
else
  TARGETS=${TARGETS:-"direct-h2c floor-h2c pilotfish-h2c direct-h1 pilotfish-h1"}
fi
OUTDIR=${OUTDIR:-$RUN/results/$(date +%Y%m%dT%H%M%S)}
CLK_TCK=$(getconf CLK_TCK)

declare -A TPORT=([direct-h2c]=$H2_UP1_PORT [floor-h2c]=$FLOOR_PORT [pilotfish-h2c]=$H2C_PROXY_PORT [direct-h1]=$H1_UP1_PORT [pilotfish-h1]=$H1_PROXY_PORT
  [pilotfish-h2c-v]=$((H2C_PROXY_PORT + 20)) [pilotfish-h1-v]=$((H1_PROXY_PORT + 20)))
for t in $TARGETS; do [[ -n ${TPORT[$t]:-} ]] || { echo "unknown target $t (known: ${!TPORT[*]})" >&2; exit 2; }; done

# ---------------------------------------------------------------- tools (apt, only what is missing)
source "$REPO/test/support/install/apt.sh"
missing=()
for pair in h2load:nghttp2-client wrk:wrk nginx:nginx curl:curl taskset:util-linux flock:util-linux; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt_install "${missing[@]}"
fi

mkdir -p "$RUN/nginx" "$OUTDIR" /tmp/peers-bench
# The peers harness's lock: two benchmarks on one box would measure each other.
exec 9>/tmp/peers-bench/lock
flock -n 9 || { echo "another benchmark holds /tmp/peers-bench/lock" >&2; exit 1; }

if [[ " $TARGETS " == *" pilotfish-"* ]]; then
  (cd "$REPO" && npm run build --silent)
fi

# ---------------------------------------------------------------- processes (only ours are ever signalled)
STARTED=()
declare -A PID
cleanup() {
  local pid
  for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${STARTED[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break
    sleep 0.1
  done
  for pid in "${STARTED[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
start() {  # start NAME CPU CMD...  (taskset and env exec, so $! is the process itself)
  local name=$1 cpu=$2; shift 2
  taskset -c "$cpu" "$@" >"$RUN/$name.log" 2>&1 &
  STARTED+=("$!")
  PID[$name]=$!
}
get() {  # get PORT H2?  -> curl's "-D -" headers; body to $RUN/body
  local h2=(); [[ $2 == h2 ]] && h2=(--http2-prior-knowledge)
  curl -sS "${h2[@]}" -D - -o "$RUN/body" --max-time 2 "http://127.0.0.1:$1/"
}
wait_port() {  # wait_port NAME PORT h1|h2
  for _ in $(seq 100); do
    get "$2" "$3" >/dev/null 2>&1 && return 0
    kill -0 "${PID[$1]}" 2>/dev/null || { echo "$1 exited; log:" >&2; cat "$RUN/$1.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "$1 did not answer on :$2 within 10 s; log:" >&2; cat "$RUN/$1.log" >&2; exit 1
}
tree() { local p c; for p in "$@"; do echo "$p"; for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do tree "$c"; done; done; }
ticks() {  # utime+stime of a process tree, in clock ticks (a process's line covers all its threads)
  local t=0 p line a
  for p in $(tree "$1"); do
    { read -r line <"/proc/$p/stat"; } 2>/dev/null || continue
    line=${line##*) }
    read -r -a a <<<"$line"
    t=$((t + a[11] + a[12]))
  done
  echo "$t"
}
hwm_reset() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; }
hwm_kb() { awk '/^VmHWM:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
USED_CPUS=" $(printf '%s\n' "$LOAD_CPU" "$UPSTREAM_CPU" "$PROXY_CPU" | sort -u | tr '\n' ' ')"
busy() {  # user+nice+system ticks of the CPUs this run uses
  awk -v cpus="$USED_CPUS" '$1 ~ /^cpu[0-9]+$/ { if (index(cpus, " " substr($1, 4) " ")) b += $2 + $3 + $4 } END { print b + 0 }' /proc/stat
}
quiet_gate() {  # wait (at most 60 s) for the box to be quiet: other workloads may share it
  local waited=0 b0 b1
  while :; do
    b0=$(busy); sleep 1; b1=$(busy)
    ((b1 - b0 <= FOREIGN_MAX_PCT)) && return 0
    ((waited >= 60)) && { echo "  (box still busy: $((b1 - b0))% of a core; measuring anyway)"; return 0; }
    sleep 2; waited=$((waited + 3))
  done
}

# ---------------------------------------------------------------- origin: nginx, h2c and HTTP/1.1
for p in "$H2_UP1_PORT" "$H2_UP2_PORT" "$H1_UP1_PORT" "$H1_UP2_PORT" "$FLOOR_PORT" $(for t in $TARGETS; do [[ $t == pilotfish-* ]] && echo "${TPORT[$t]}"; done); do
  port_busy "$p" && { echo "port $p already in use; not touching it (set the *_PORT knobs)" >&2; exit 1; }
done
# The harness's body: the 36 characters a–z0–9 repeated, cut at 1024 bytes.
BODY=$(printf 'abcdefghijklmnopqrstuvwxyz0123456789%.0s' $(seq 29) | head -c 1024)
server_block() {  # server_block PORT [http2]
  printf '    server {\n        listen 127.0.0.1:%s %sbacklog=4096;\n        location / {\n            default_type text/plain;\n            add_header X-Upstream %s;\n            return 200 "%s";\n        }\n    }\n' \
    "$1" "${2:+$2 }" "$1" "$BODY"
}
cat >"$RUN/origin.conf" <<EOF
# Rendered by test/bench/h2c.sh: the peers harness's origin, plus two h2c (prior knowledge) listeners.
worker_processes 1;
pid $RUN/origin.pid;
error_log $RUN/origin.error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    server_tokens off;
    keepalive_timeout 75s;
    keepalive_requests 10000000;   # also HTTP/2 requests per connection (nginx ≥ 1.19.7): no GOAWAY mid-run
    http2_max_concurrent_streams 128;
    tcp_nodelay on;
    client_body_temp_path $RUN/nginx/client_body;
    proxy_temp_path       $RUN/nginx/proxy;
    fastcgi_temp_path     $RUN/nginx/fastcgi;
    uwsgi_temp_path       $RUN/nginx/uwsgi;
    scgi_temp_path        $RUN/nginx/scgi;
$(server_block "$H2_UP1_PORT" http2)
$(server_block "$H2_UP2_PORT" http2)
$(server_block "$H1_UP1_PORT")
$(server_block "$H1_UP2_PORT")
}
EOF
start origin "$UPSTREAM_CPU" nginx -p "$RUN/nginx" -c "$RUN/origin.conf" -e "$RUN/origin.error.log" -g 'daemon off;'
for p in "$H2_UP1_PORT" "$H2_UP2_PORT"; do wait_port origin "$p" h2; done
for p in "$H1_UP1_PORT" "$H1_UP2_PORT"; do wait_port origin "$p" h1; done
PID[direct-h2c]=${PID[origin]}
PID[direct-h1]=${PID[origin]}

# ---------------------------------------------------------------- Pilotfish: one process per protocol
start_pilotfish() {  # start_pilotfish TARGET BENCH_POLICY PORT UP1 UP2 h1|h2
  [[ " $TARGETS " == *" $1 "* ]] || return 0
  local tree=$REPO flags=()
  if [[ $1 == *-v ]]; then
    tree=${VARIANT_BUILD:-$REPO}
    [[ -n ${VARIANT_NODE_FLAGS+set} ]] && flags=(BENCH_NODE_FLAGS="$VARIANT_NODE_FLAGS")
  fi
  start "$1" "$PROXY_CPU" env "${flags[@]}" BENCH_POLICY="$2" BENCH_POLICY_FILE="$RUN/$1.yaml" PORT="$3" \
    UPSTREAMS="http://127.0.0.1:$4,http://127.0.0.1:$5" bash "$tree/test/bench/pilotfish.sh"
  wait_port "$1" "$3" "$6"
}
start_pilotfish pilotfish-h2c h2c "${TPORT[pilotfish-h2c]}" "$H2_UP1_PORT" "$H2_UP2_PORT" h2
start_pilotfish pilotfish-h1 basic "${TPORT[pilotfish-h1]}" "$H1_UP1_PORT" "$H1_UP2_PORT" h1
start_pilotfish pilotfish-h2c-v h2c "${TPORT[pilotfish-h2c-v]}" "$H2_UP1_PORT" "$H2_UP2_PORT" h2
start_pilotfish pilotfish-h1-v basic "${TPORT[pilotfish-h1-v]}" "$H1_UP1_PORT" "$H1_UP2_PORT" h1
if [[ " $TARGETS " == *" floor-h2c "* ]]; then
  start floor-h2c "$PROXY_CPU" env PORT="$FLOOR_PORT" UPSTREAMS="http://127.0.0.1:$H2_UP1_PORT,http://127.0.0.1:$H2_UP2_PORT" \
    node ${FLOOR_NODE_FLAGS:-} "$REPO/test/bench/h2-floor.js"
  wait_port floor-h2c "$FLOOR_PORT" h2
fi

# ---------------------------------------------------------------- validate: 200, 1024 bytes, both endpoints
for t in $TARGETS; do
  seen=""
  proto=h1; [[ $t == *-h2c ]] && proto=h2
  for _ in 1 2 3 4; do
    head=$(get "${TPORT[$t]}" "$proto") || { echo "$t: request failed" >&2; exit 1; }
    code=$(printf '%s\n' "$head" | awk 'NR==1{print $2}')
    size=$(stat -c %s "$RUN/body")
    [[ $code == 200 && $size == 1024 ]] || { echo "$t: bad response (status $code, $size bytes)" >&2; exit 1; }
    seen="$seen $(printf '%s\n' "$head" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-upstream"{print $2}')"
  done
  [[ $t == pilotfish-* && $(tr ' ' '\n' <<<"$seen" | sort -u | grep -c .) -lt 2 ]] && echo "WARNING: $t did not balance over both endpoints (saw:$seen)" >&2
  echo "ok  $t  :${TPORT[$t]}  pid ${PID[$t]}  $([[ $proto == h2 ]] && echo h2c || echo HTTP/1.1)  upstreams seen:$seen"
done
{
  echo "date: $(date -u +%FT%TZ)  kernel: $(uname -r)  cpu: $(nproc) x $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
  echo "pinning: load cpu $LOAD_CPU, origin cpu $UPSTREAM_CPU, pilotfish cpu $PROXY_CPU"
  echo "node $(node --version), nginx $(nginx -v 2>&1 | sed 's/.*version: //'), $(h2load --version | head -1), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
  echo "rounds=$ROUNDS duration=${DURATION}s warmup=${WARMUP}s h2c: h2load -c1 -m$STREAMS; HTTP/1.1: wrk -t1 -c$H1_CONNS; targets: $TARGETS"
} | tee "$OUTDIR/env.txt"

# ---------------------------------------------------------------- measure
load() {  # load TARGET SECONDS: the load generator, pinned, for SECONDS
  if [[ $1 == *-h2c ]]; then
    timeout $(($2 + 30)) taskset -c "$LOAD_CPU" h2load -c1 -m"$STREAMS" -t1 -D "$2" "http://127.0.0.1:${TPORT[$1]}/"
  else
    timeout $(($2 + 30)) taskset -c "$LOAD_CPU" wrk -t1 -c"$H1_CONNS" -d"${2}s" "http://127.0.0.1:${TPORT[$1]}/"
  fi
}
JSONL=$OUTDIR/results.jsonl
: >"$JSONL"
TIMEFORMAT='%U %S'
measure_once() {  # measure_once ROUND TARGET -> M_JSON, M_LINE, M_FOREIGN
  local r=$1 t=$2 f="$OUTDIR/$2-r$1.txt" pid=${PID[$2]} proxy=false
  local b0 b1 p0=0 p1=0 o0 o1 rps n bad lticks pticks=0 foreign hwm=0
  [[ $t == pilotfish-* || $t == floor-* ]] && proxy=true
  load "$t" "$WARMUP" >/dev/null 2>&1 || true
  quiet_gate
  $proxy && hwm_reset "$pid"
  b0=$(busy); o0=$(ticks "${PID[origin]}"); $proxy && p0=$(ticks "$pid")
  { time load "$t" "$DURATION" >"$f" 2>&1; } 2>"$f.time"
  b1=$(busy); o1=$(ticks "${PID[origin]}"); $proxy && p1=$(ticks "$pid")
  if [[ $t == *-h2c ]]; then
    rps=$(awk '/^finished in/{print $4}' "$f")
    n=$(awk '/^requests:/{print $6}' "$f")                              # done
    bad=$(awk '/^requests:/{print $10 + $14}' "$f")                    # failed (non-2xx/3xx and errored) + timeout
  else
    rps=$(awk '/^Requests\/sec:/{print $2}' "$f")
    n=$(awk '/ requests in /{print $1}' "$f")
    bad=$(awk '/Non-2xx or 3xx responses:/{s += $5} /Socket errors:/{s += $4 + $6 + $8 + $10} END {print s + 0}' "$f" | tr -d ,)
  fi
  [[ -n $rps && -n $n && $n -gt 0 ]] || { echo "no result for $t round $r:" >&2; cat "$f" >&2; exit 1; }
  lticks=$(awk -v hz="$CLK_TCK" '{printf "%d", ($1 + $2) * hz + 0.5}' "$f.time")
  $proxy && { pticks=$((p1 - p0)); hwm=$(hwm_kb "$pid"); }
  foreign=$(( ((b1 - b0) - pticks - (o1 - o0) - lticks) * 100 / CLK_TCK / DURATION ))
  ((foreign < 0)) && foreign=0
  M_FOREIGN=$foreign
  M_JSON=$(printf '{"round":%d,"target":"%s","rps":%s,"requests":%d,"errors":%d,"proxy_cpu_ticks":%d,"clk_tck":%d,"proxy_hwm_kb":%d,"foreign_pct":%d' \
    "$r" "$t" "$rps" "$n" "$bad" "$pticks" "$CLK_TCK" "$hwm" "$foreign")
  M_LINE=$(printf '  r%d %-14s %10.0f req/s  %s  %s%s' "$r" "$t" "$rps" \
    "$($proxy && awk -v p="$pticks" -v n="$n" -v hz="$CLK_TCK" 'BEGIN{printf "%6.1f µs/req", p * 1e6 / hz / n}' || echo '     – µs/req')" \
    "$($proxy && echo "$((hwm / 1024)) MiB" || echo '–')" \
    "$( ((bad > 0)) && echo "  ERRORS: $bad" || true)")
}
# The interleaved rounds, each run redone while other processes disturb it (rounds.sh).
source "$REPO/test/bench/rounds.sh"
run_rounds

# ---------------------------------------------------------------- summary: median (min–max) per target
node - "$JSONL" <<'EOF' | tee "$OUTDIR/summary.md"
const rows = require('node:fs').readFileSync(process.argv[2], 'utf8').trim().split('\n').filter(Boolean).map(JSON.parse);
const by = new Map();
for (const r of rows) (by.get(r.target) ?? by.set(r.target, []).get(r.target)).push(r);
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const cell = (xs, f) => `${f(median(xs))} (${f(Math.min(...xs))}–${f(Math.max(...xs))})`;
const k = (x) => `${(x / 1000).toFixed(1)}k`;
const us = (r) => (r.proxy_cpu_ticks * 1e6) / r.clk_tck / r.requests;
const med = {};
console.log('| target | requests/s | proxy CPU µs/request | peak RSS MiB | errors | disturbed runs |');
console.log('|---|---:|---:|---:|---:|---:|');
for (const [t, rs] of by) {
  const proxy = t.startsWith('pilotfish') || t.startsWith('floor');
  med[t] = { rps: median(rs.map((r) => r.rps)), us: proxy ? median(rs.map(us)) : null };
  console.log(`| ${t} | ${cell(rs.map((r) => r.rps), k)} | ${proxy ? cell(rs.map(us), (x) => x.toFixed(1)) : '–'} | ` +
    `${proxy ? cell(rs.map((r) => r.proxy_hwm_kb / 1024), (x) => x.toFixed(0)) : '–'} | ${rs.reduce((s, r) => s + r.errors, 0)} | ` +
    `${rs.filter((r) => r.disturbed).length} of ${rs.length} |`);
}
const h2 = med['pilotfish-h2c'], h1 = med['pilotfish-h1'];
if (h2 && med['direct-h2c']) console.log(`\npilotfish-h2c / direct-h2c requests/s: ${(h2.rps / med['direct-h2c'].rps).toFixed(3)}`);
if (h1 && med['direct-h1']) console.log(`pilotfish-h1 / direct-h1 requests/s: ${(h1.rps / med['direct-h1'].rps).toFixed(3)}`);
const floor = med['floor-h2c'];
if (h2 && floor) console.log(`pilotfish-h2c / floor-h2c (node:http2 alone) CPU per request: ${(h2.us / floor.us).toFixed(2)}×`);
if (floor && h1) console.log(`floor-h2c's own per-request efficiency vs Pilotfish HTTP/1.1: ${(h1.us / floor.us).toFixed(2)}×`);
if (h2 && h1) {
  console.log(`h2c per-request efficiency vs HTTP/1.1 (HTTP/1.1 µs/request ÷ h2c µs/request): ${(h1.us / h2.us).toFixed(2)}× (target ≥ 0.8×)`);
}
// Per round, paired: each round's targets ran back to back.
const perRound = (num, den) => {
  const xs = [];
  for (const r of by.get(num) ?? []) {
    const d = (by.get(den) ?? []).find((x) => x.round === r.round);
    if (d) xs.push(us(r) / us(d));
  }
  return xs.length ? cell(xs, (x) => x.toFixed(2)) : null;
};
const eff = perRound('pilotfish-h1', 'pilotfish-h2c');
if (eff) console.log(`  paired per round: ${eff}`);
const h2v = med['pilotfish-h2c-v'], h1v = med['pilotfish-h1-v'];
if (h2v && h1v) console.log(`variant: h2c efficiency ${(h1v.us / h2v.us).toFixed(2)}× (paired per round ${perRound('pilotfish-h1-v', 'pilotfish-h2c-v')})`);
for (const p of ['h2c', 'h1']) {
  const r = perRound(`pilotfish-${p}-v`, `pilotfish-${p}`);
  if (r) console.log(`variant ÷ base CPU per request, ${p}: ${r}`);
}
EOF
echo "raw results: $OUTDIR"
