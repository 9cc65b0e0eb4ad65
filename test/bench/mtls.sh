#!/usr/bin/env bash
# `BENCH_MODE=mtls npm run bench`: what one mutual-TLS hop between two sidecars costs. Two Pilotfish
# processes on loopback, sidecar A (outbound listener) → sidecar B (inbound listener) → an nginx origin,
# measured as a pair, with the hop in plaintext and in mutual TLS. See test/bench/README.md ("mtls mode").
#
#   wrk → A :$PLAIN_A_PORT ─ plaintext ─→ B :$PLAIN_B_PORT (inbound, tls: none) ─→ origin   plain-hop
#   wrk → A :$MTLS_A_PORT ── mTLS ──────→ B :$MTLS_B_PORT  (inbound, tls: mesh) ─→ origin   mtls-hop
#
# and, as the floor, the same pair with both sidecars replaced by the bare undici forwarder (mtls-floor.js:
# no policy logic; B's listener requires a client certificate, A presents one): plain-floor, mtls-floor.
#
# Both pairs load the same certificates (made with `pilotfish certs`) and their policies differ only in
# the hop's `tls` (and the upstream `identity` that tls: mesh requires), so the difference between the
# targets is the TLS: handshakes, record encryption, and the caller identity B passes to the origin
# (x-forwarded-client-cert). Per run: requests/s; CPU µs per request of A and B together (utime+stime of
# both processes from /proc/PID/stat, before/after, over the requests completed), and of each; their peak
# RSS (VmHWM, reset first); and the A→B connections opened during the run (each one a TLS handshake in
# mtls-hop), counted from `ss` before and after, so a connection opened and closed within the run is
# missed. The end prints median (min–max) per target, mtls-hop ÷ plain-hop CPU per request (target ≤ 1.25)
# and mtls-floor ÷ plain-floor (what TLS costs the bare forwarder pair), each paired per round.
# Pinned like the other benchmarks: wrk and the origin on CPU 0, both sidecars on CPU 1.
#
# Knobs: ROUNDS [5] DURATION [10] WARMUP [2] CONNS [64] TARGETS ["plain-hop mtls-hop plain-floor mtls-floor"]
#   LOAD_CPU/UPSTREAM_CPU [0] PROXY_CPU [1] (both sidecars)  ORIGIN_PORT [19105]
#   PLAIN_A_PORT/PLAIN_B_PORT [18096/18097] MTLS_A_PORT/MTLS_B_PORT [18098/18099]
#   PLAIN_FLOOR_A_PORT/.._B_PORT [18100/18101] MTLS_FLOOR_A_PORT/.._B_PORT [18102/18103]
#   (each sidecar's admin listener on PORT+1000; B's unused outbound listener on B_PORT+2000)
#   FOREIGN_MAX_PCT [8] MAX_REDO [3] (a run during which other processes used more than FOREIGN_MAX_PCT % of
#   a core is redone, up to MAX_REDO times, then kept and flagged)
#   OUTDIR [/tmp/pilotfish-mtls-bench/results/<timestamp>]
#   EXTRA_NODE_FLAGS [none]: node flags added to every sidecar's and floor forwarder's (e.g. --cpu-prof --cpu-prof-dir=DIR)
# A quick smoke run: BENCH_MODE=mtls ROUNDS=1 DURATION=3 npm run bench
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUN=/tmp/pilotfish-mtls-bench
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
LOAD_CPU=${LOAD_CPU:-0}
UPSTREAM_CPU=${UPSTREAM_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
ORIGIN_PORT=${ORIGIN_PORT:-19105}
PLAIN_A_PORT=${PLAIN_A_PORT:-18096}
PLAIN_B_PORT=${PLAIN_B_PORT:-18097}
MTLS_A_PORT=${MTLS_A_PORT:-18098}
MTLS_B_PORT=${MTLS_B_PORT:-18099}
PLAIN_FLOOR_A_PORT=${PLAIN_FLOOR_A_PORT:-18100}
PLAIN_FLOOR_B_PORT=${PLAIN_FLOOR_B_PORT:-18101}
MTLS_FLOOR_A_PORT=${MTLS_FLOOR_A_PORT:-18102}
MTLS_FLOOR_B_PORT=${MTLS_FLOOR_B_PORT:-18103}
FOREIGN_MAX_PCT=${FOREIGN_MAX_PCT:-8}
MAX_REDO=${MAX_REDO:-3}
TARGETS=${TARGETS:-"plain-hop mtls-hop plain-floor mtls-floor"}
OUTDIR=${OUTDIR:-$RUN/results/$(date +%Y%m%dT%H%M%S)}
CLK_TCK=$(getconf CLK_TCK)
CLI=$REPO/dist/cmd/pilotfish.js
source "$REPO/test/bench/node-flags.sh"
TRUST_DOMAIN=mesh.local
ID_A=spiffe://$TRUST_DOMAIN/ns/bench/sa/a
ID_B=spiffe://$TRUST_DOMAIN/ns/bench/sa/b

declare -A A_PORT=([plain-hop]=$PLAIN_A_PORT [mtls-hop]=$MTLS_A_PORT [plain-floor]=$PLAIN_FLOOR_A_PORT [mtls-floor]=$MTLS_FLOOR_A_PORT)
declare -A B_PORT=([plain-hop]=$PLAIN_B_PORT [mtls-hop]=$MTLS_B_PORT [plain-floor]=$PLAIN_FLOOR_B_PORT [mtls-floor]=$MTLS_FLOOR_B_PORT)
declare -A HOP_TLS=([plain-hop]=none [mtls-hop]=mesh [plain-floor]=none [mtls-floor]=mesh)
for t in $TARGETS; do [[ -n ${A_PORT[$t]:-} ]] || { echo "unknown target $t (known: plain-hop mtls-hop plain-floor mtls-floor)" >&2; exit 2; }; done
is_floor() { [[ $1 == *-floor ]]; }

# ---------------------------------------------------------------- tools (apt, only what is missing)
source "$REPO/test/support/install/apt.sh"
missing=()
for pair in wrk:wrk nginx:nginx curl:curl openssl:openssl ss:iproute2 taskset:util-linux flock:util-linux; do
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

(cd "$REPO" && npm run build --silent)
[[ -f $CLI ]] || { echo "build produced no dist/cmd/pilotfish.js" >&2; exit 1; }

# ---------------------------------------------------------------- processes (only ours are ever signalled)
STARTED=()
declare -A PID
cleanup() {
  local pid
  for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # Pilotfish drains on SIGTERM and stops after a quiet period (5 s by default) with nothing open.
  for _ in $(seq 100); do
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
wait_url() {  # wait_url NAME URL: until it answers 200
  for _ in $(seq 100); do
    curl -fsS -o /dev/null --max-time 2 "$2" 2>/dev/null && return 0
    kill -0 "${PID[$1]}" 2>/dev/null || { echo "$1 exited; log:" >&2; cat "$RUN/$1.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "$1 did not answer 200 on $2 within 10 s; log:" >&2; tail -n 50 "$RUN/$1.log" >&2; exit 1
}
tree() { local p c; for p in "$@"; do echo "$p"; for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do tree "$c"; done; done; }
ticks() {  # utime+stime of process trees, in clock ticks (a process's line covers all its threads)
  local t=0 p line a
  for p in $(tree "$@"); do
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
hop_conns() {  # hop_conns PORT: the peers (A's local ip:port) of the connections B accepted on PORT, sorted
  ss -Htn state established "( sport = :$1 )" | awk '{print $4}' | sort
}

for p in "$ORIGIN_PORT"; do port_busy "$p" && { echo "port $p already in use; not touching it (set ORIGIN_PORT)" >&2; exit 1; }; done
for t in $TARGETS; do
  for p in "${A_PORT[$t]}" $((A_PORT[$t] + 1000)) "${B_PORT[$t]}" $((B_PORT[$t] + 1000)) $((B_PORT[$t] + 2000)); do
    port_busy "$p" && { echo "port $p ($t) already in use; not touching it (set the *_PORT knobs)" >&2; exit 1; }
  done
done

# ---------------------------------------------------------------- origin: nginx, the harness's 1 KiB body
# The harness's body: the 36 characters a–z0–9 repeated, cut at 1024 bytes. /whoami (validation only, never
# loaded) answers with the caller identity B passed on, so the check below proves which hop was measured.
BODY=$(printf 'abcdefghijklmnopqrstuvwxyz0123456789%.0s' $(seq 29) | head -c 1024)
cat >"$RUN/origin.conf" <<EOF
# Rendered by test/bench/mtls.sh: the peers harness's origin (1 KiB body, keep-alive), one endpoint.
worker_processes 1;
pid $RUN/origin.pid;
error_log $RUN/origin.error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    server_tokens off;
    keepalive_timeout 75s;
    keepalive_requests 10000000;
    tcp_nodelay on;
    client_body_temp_path $RUN/nginx/client_body;
    proxy_temp_path       $RUN/nginx/proxy;
    fastcgi_temp_path     $RUN/nginx/fastcgi;
    uwsgi_temp_path       $RUN/nginx/uwsgi;
    scgi_temp_path        $RUN/nginx/scgi;
    server {
        listen 127.0.0.1:$ORIGIN_PORT backlog=4096;
        default_type text/plain;
        location = /whoami { return 200 "xfcc=\$http_x_forwarded_client_cert\n"; }
        location / { return 200 "$BODY"; }
    }
}
EOF
start origin "$UPSTREAM_CPU" nginx -p "$RUN/nginx" -c "$RUN/origin.conf" -e "$RUN/origin.error.log" -g 'daemon off;'
wait_url origin "http://127.0.0.1:$ORIGIN_PORT/"

# ---------------------------------------------------------------- certificates and the two sidecar pairs
rm -rf "$RUN/certs"
node "$CLI" certs --out "$RUN/certs" --trust-domain "$TRUST_DOMAIN" --workload "a=$ID_A" --workload "b=$ID_B" >/dev/null
identity() {  # identity NAME: the policy's identity section (both pairs load one, so only the hop's TLS differs)
  printf 'identity:\n  trustDomain: %s\n  certFile: %s\n  keyFile: %s\n  trustBundleFile: %s\n' \
    "$TRUST_DOMAIN" "$RUN/certs/$1.pem" "$RUN/certs/$1-key.pem" "$RUN/certs/ca.pem"
}
policy_a() {  # policy_a TARGET: sidecar A, one catch-all route to B's inbound listener
  local t=$1 tls=${HOP_TLS[$1]} check=""
  [[ $tls == mesh ]] && check=$'\n    identity: '"$ID_B"
  cat <<EOF
# Rendered by test/bench/mtls.sh: sidecar A of $t (outbound; the hop to B with tls: $tls).
version: 1
listeners:
  outbound: { address: 127.0.0.1:${A_PORT[$t]} }
  admin: { address: 127.0.0.1:$((A_PORT[$t] + 1000)) }
$(identity a)
upstreams:
  b:
    discovery: { static: [127.0.0.1:${B_PORT[$t]}] }
    balancer: round-robin
    tls: $tls$check
routes:
  - match: { pathPrefix: / }
    upstream: b
EOF
}
policy_b() {  # policy_b TARGET: sidecar B, the inbound listener in front of the origin (its default route)
  local t=$1
  cat <<EOF
# Rendered by test/bench/mtls.sh: sidecar B of $t (inbound, tls: ${HOP_TLS[$t]}, in front of the origin).
version: 1
listeners:
  outbound: { address: 127.0.0.1:$((B_PORT[$t] + 2000)) }   # unused here; every sidecar has one
  admin: { address: 127.0.0.1:$((B_PORT[$t] + 1000)) }
  inbound:
    address: 127.0.0.1:${B_PORT[$t]}
    app: 127.0.0.1:$ORIGIN_PORT
    tls: ${HOP_TLS[$t]}
$(identity b)
upstreams: {}
routes: []
EOF
}
# shellcheck disable=SC2086 # EXTRA_NODE_FLAGS: flags to add (word-split on purpose)
start_floor() {  # start_floor TARGET: the bare forwarder pair (mtls-floor.js), B then A, with node's defaults
  local t=$1 scheme=http listen_tls=0
  [[ ${HOP_TLS[$t]} == mesh ]] && scheme=https listen_tls=1
  start "$t-b" "$PROXY_CPU" env PORT="${B_PORT[$t]}" UPSTREAM="http://127.0.0.1:$ORIGIN_PORT" LISTEN_TLS=$listen_tls \
    CERT="$RUN/certs/b.pem" KEY="$RUN/certs/b-key.pem" CA="$RUN/certs/ca.pem" node ${EXTRA_NODE_FLAGS:-} "$REPO/test/bench/mtls-floor.js"
  start "$t-a" "$PROXY_CPU" env PORT="${A_PORT[$t]}" UPSTREAM="$scheme://127.0.0.1:${B_PORT[$t]}" \
    CERT="$RUN/certs/a.pem" KEY="$RUN/certs/a-key.pem" CA="$RUN/certs/ca.pem" node ${EXTRA_NODE_FLAGS:-} "$REPO/test/bench/mtls-floor.js"
  wait_url "$t-a" "http://127.0.0.1:${A_PORT[$t]}/"   # 502 until B listens
}
for t in $TARGETS; do
  if is_floor "$t"; then start_floor "$t"; continue; fi
  policy_b "$t" >"$RUN/$t-b.yaml"
  policy_a "$t" >"$RUN/$t-a.yaml"
  for side in b a; do node "$CLI" validate "$RUN/$t-$side.yaml" >/dev/null; done
  # shellcheck disable=SC2086 # EXTRA_NODE_FLAGS: flags to add (word-split on purpose)
  start "$t-b" "$PROXY_CPU" node "${PILOTFISH_NODE_FLAGS[@]}" ${EXTRA_NODE_FLAGS:-} "$CLI" run --policy "$RUN/$t-b.yaml"
  wait_url "$t-b" "http://127.0.0.1:$((B_PORT[$t] + 1000))/readyz"
  # shellcheck disable=SC2086
  start "$t-a" "$PROXY_CPU" node "${PILOTFISH_NODE_FLAGS[@]}" ${EXTRA_NODE_FLAGS:-} "$CLI" run --policy "$RUN/$t-a.yaml"
  wait_url "$t-a" "http://127.0.0.1:${A_PORT[$t]}/"
done

# ---------------------------------------------------------------- validate: 200, 1024 bytes, the right hop
for t in $TARGETS; do
  for _ in 1 2 3 4; do
    code=$(curl -sS -o "$RUN/body" -w '%{http_code}' --max-time 2 "http://127.0.0.1:${A_PORT[$t]}/") || { echo "$t: request failed" >&2; exit 1; }
    size=$(stat -c %s "$RUN/body")
    [[ $code == 200 && $size == 1024 ]] || { echo "$t: bad response (status $code, $size bytes)" >&2; exit 1; }
  done
  if is_floor "$t"; then
    echo "ok  $t  A :${A_PORT[$t]} (pid ${PID[$t-a]}) → B :${B_PORT[$t]} (pid ${PID[$t-b]}, tls: ${HOP_TLS[$t]}) → origin :$ORIGIN_PORT  (bare forwarders)"
    continue
  fi
  who=$(curl -sS --max-time 2 "http://127.0.0.1:${A_PORT[$t]}/whoami")
  want="xfcc="; [[ ${HOP_TLS[$t]} == mesh ]] && want="xfcc=By=$ID_B;URI=$ID_A"
  [[ $who == "$want" ]] || { echo "$t: the origin saw '$who', expected '$want' (is the hop what it should be?)" >&2; exit 1; }
  echo "ok  $t  A :${A_PORT[$t]} (pid ${PID[$t-a]}) → B :${B_PORT[$t]} (pid ${PID[$t-b]}, tls: ${HOP_TLS[$t]}) → origin :$ORIGIN_PORT  origin saw: $who"
done
for t in mtls-hop mtls-floor; do
  [[ " $TARGETS " == *" $t "* ]] || continue
  # B must refuse a caller without a certificate (the plain pairs have no TLS to refuse with).
  for url in "http://127.0.0.1:${B_PORT[$t]}/" "https://127.0.0.1:${B_PORT[$t]}/"; do
    if curl -sS -o /dev/null --max-time 2 --cacert "$RUN/certs/ca.pem" "$url" 2>/dev/null; then
      echo "$t: B answered $url without a client certificate; it should refuse it" >&2; exit 1
    fi
  done
done
{
  echo "date: $(date -u +%FT%TZ)  kernel: $(uname -r)  cpu: $(nproc) x $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
  echo "pinning: load cpu $LOAD_CPU, origin cpu $UPSTREAM_CPU, both sidecars cpu $PROXY_CPU"
  echo "node $(node --version), nginx $(nginx -v 2>&1 | sed 's/.*version: //'), $(openssl version), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
  echo "rounds=$ROUNDS duration=${DURATION}s warmup=${WARMUP}s wrk -t1 -c$CONNS; targets: $TARGETS; certificates: EC P-256 (pilotfish certs)"
} | tee "$OUTDIR/env.txt"
for t in $TARGETS; do is_floor "$t" || cp "$RUN/$t-a.yaml" "$RUN/$t-b.yaml" "$OUTDIR/"; done

# ---------------------------------------------------------------- measure
load() {  # load TARGET SECONDS: wrk, pinned, for SECONDS
  timeout $(($2 + 30)) taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${2}s" "http://127.0.0.1:${A_PORT[$1]}/"
}
JSONL=$OUTDIR/results.jsonl
: >"$JSONL"
TIMEFORMAT='%U %S'
measure_once() {  # measure_once ROUND TARGET -> M_JSON, M_LINE, M_FOREIGN
  local r=$1 t=$2 f="$OUTDIR/$2-r$1.txt" pa=${PID[$2-a]} pb=${PID[$2-b]}
  local b0 b1 a0 a1 c0 c1 o0 o1 rps n bad lticks foreign hwm_a hwm_b conns_before conns_after opened
  load "$t" "$WARMUP" >"$f.warmup" 2>&1 || true  # kept: a profile spans the warm-up too
  quiet_gate
  hwm_reset "$pa"; hwm_reset "$pb"
  conns_before=$(hop_conns "${B_PORT[$t]}")
  b0=$(busy); o0=$(ticks "${PID[origin]}"); a0=$(ticks "$pa"); c0=$(ticks "$pb")
  { time load "$t" "$DURATION" >"$f" 2>&1; } 2>"$f.time"
  b1=$(busy); o1=$(ticks "${PID[origin]}"); a1=$(ticks "$pa"); c1=$(ticks "$pb")
  conns_after=$(hop_conns "${B_PORT[$t]}")
  opened=$(comm -13 <(printf '%s\n' "$conns_before") <(printf '%s\n' "$conns_after") | grep -c . || true)
  rps=$(awk '/^Requests\/sec:/{print $2}' "$f")
  n=$(awk '/ requests in /{print $1}' "$f")
  bad=$(awk '/Non-2xx or 3xx responses:/{s += $5} /Socket errors:/{s += $4 + $6 + $8 + $10} END {print s + 0}' "$f" | tr -d ,)
  [[ -n $rps && -n $n && $n -gt 0 ]] || { echo "no result for $t round $r:" >&2; cat "$f" >&2; exit 1; }
  lticks=$(awk -v hz="$CLK_TCK" '{printf "%d", ($1 + $2) * hz + 0.5}' "$f.time")
  hwm_a=$(hwm_kb "$pa"); hwm_b=$(hwm_kb "$pb")
  foreign=$(( ((b1 - b0) - (a1 - a0) - (c1 - c0) - (o1 - o0) - lticks) * 100 / CLK_TCK / DURATION ))
  ((foreign < 0)) && foreign=0
  M_FOREIGN=$foreign
  M_JSON=$(printf '{"round":%d,"target":"%s","rps":%s,"requests":%d,"errors":%d,"a_cpu_ticks":%d,"b_cpu_ticks":%d,"clk_tck":%d,"a_hwm_kb":%d,"b_hwm_kb":%d,"hop_conns_opened":%d,"hop_conns_open":%d,"foreign_pct":%d' \
    "$r" "$t" "$rps" "$n" "$bad" $((a1 - a0)) $((c1 - c0)) "$CLK_TCK" "$hwm_a" "$hwm_b" "$opened" "$(printf '%s\n' "$conns_after" | grep -c . || true)" "$foreign")
  M_LINE=$(printf '  r%d %-10s %8.0f req/s  %s  %d MiB  A→B conns opened %d%s' "$r" "$t" "$rps" \
    "$(awk -v a=$((a1 - a0)) -v b=$((c1 - c0)) -v n="$n" -v hz="$CLK_TCK" 'BEGIN{printf "%6.1f µs/req (A %.1f + B %.1f)", (a + b) * 1e6 / hz / n, a * 1e6 / hz / n, b * 1e6 / hz / n}')" \
    $(((hwm_a + hwm_b) / 1024)) "$opened" "$( ((bad > 0)) && echo "  ERRORS: $bad" || true)")
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
const f1 = (x) => x.toFixed(1);
const us = (ticks, r) => (ticks * 1e6) / r.clk_tck / r.requests;
const both = (r) => us(r.a_cpu_ticks + r.b_cpu_ticks, r);
console.log('| target | requests/s | CPU µs/request, A + B | A | B | A→B connections opened (per run) | peak RSS MiB, A + B | errors | disturbed runs |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const [t, rs] of by) {
  console.log(`| ${t} | ${cell(rs.map((r) => r.rps), k)} | ${cell(rs.map(both), f1)} | ${f1(median(rs.map((r) => us(r.a_cpu_ticks, r))))} | ` +
    `${f1(median(rs.map((r) => us(r.b_cpu_ticks, r))))} | ${rs.map((r) => r.hop_conns_opened).join(', ')} (${rs.at(-1).hop_conns_open} open) | ` +
    `${cell(rs.map((r) => (r.a_hwm_kb + r.b_hwm_kb) / 1024), (x) => x.toFixed(0))} | ${rs.reduce((s, r) => s + r.errors, 0)} | ` +
    `${rs.filter((r) => r.disturbed).length} of ${rs.length} |`);
}
// Paired within each round (the targets ran back to back): drift of the machine between rounds cancels.
const pairedRatios = (over, under, f) => over.flatMap((o) => under.filter((u) => u.round === o.round).map((u) => f(o) / f(u)));
const tlsCost = (name) => {
  const plain = by.get(`plain-${name}`), mtls = by.get(`mtls-${name}`);
  if (!plain || !mtls) return null;
  const ratio = median(mtls.map(both)) / median(plain.map(both));
  console.log(`\nmtls-${name} / plain-${name} CPU µs per request (A + B), by the medians: ${ratio.toFixed(2)}×` +
    `${name === 'hop' ? ` (target ≤ 1.25×: ${ratio <= 1.25 ? 'met' : 'NOT met'})` : ''}; paired per round: ${cell(pairedRatios(mtls, plain, both), (x) => x.toFixed(2))}`);
  console.log(`mtls-${name} / plain-${name} requests/s, by the medians: ${(median(mtls.map((r) => r.rps)) / median(plain.map((r) => r.rps))).toFixed(2)}×`);
  return { plain, mtls };
};
const hop = tlsCost('hop'), floor = tlsCost('floor');
if (hop && floor) {
  // The TLS ratio of Pilotfish's pair over the bare pair's, each paired within the round: above 1, the
  // sidecars pay more for TLS than Node itself does.
  const ratios = (pair) => new Map(pair.mtls.flatMap((m) => pair.plain.filter((p) => p.round === m.round).map((p) => [m.round, both(m) / both(p)])));
  const ours = ratios(hop), bare = ratios(floor);
  const over = [...ours].filter(([r]) => bare.has(r)).map(([r, x]) => x / bare.get(r));
  console.log(`Pilotfish's mtls/plain ratio ÷ the bare pair's, paired per round: ${cell(over, (x) => x.toFixed(2))}`);
}
EOF
echo "raw results: $OUTDIR"
