# Shared by soak.sh and profile.sh (sourced): the tools they need, the harness copy whose bare undici
# forwarder they compare against, and the nginx origin (the harness's 1 KiB body, keep-alive).
# Expects REPO and PEERS_DIR set; `setup_bench` does the whole preamble.

source "$REPO/test/support/install/apt.sh"
for pair in wrk:wrk nginx:nginx curl:curl taskset:util-linux bc:bc; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || apt_install "${pair#*:}"
done

# ensure_peers: the harness copy in PEERS_DIR (what `npm run bench` makes), made here if missing.
ensure_peers() {
  [[ -f $PEERS_DIR/proxies/undici-forwarder.js && -d $PEERS_DIR/node_modules ]] && return 0
  local shared=${SHARED_BENCH:-$REPO/../shared/bench}
  echo "copying $shared to $PEERS_DIR (npm ci) for its forwarder"
  mkdir -p "$PEERS_DIR"
  (cd "$shared" && tar --exclude=./node_modules --exclude=./results -cf - .) | (cd "$PEERS_DIR" && tar -xf -)
  chmod -R u+w "$PEERS_DIR"
  (cd "$PEERS_DIR" && npm ci --no-audit --no-fund)
}

# start_origin DIR CPU PORT1 PORT2: nginx on both ports, pinned; its PID in ORIGIN_PID.
start_origin() {
  local dir=$1 cpu=$2 up1=$3 up2=$4 body
  mkdir -p "$dir/nginx"
  body=$(printf 'abcdefghijklmnopqrstuvwxyz0123456789%.0s' $(seq 29) | head -c 1024)
  cat >"$dir/origin.conf" <<CONF
worker_processes 1;
pid $dir/origin.pid;
error_log $dir/origin.error.log warn;
events { worker_connections 8192; }
http {
    access_log off; keepalive_timeout 75s; keepalive_requests 10000000;
    client_body_temp_path $dir/nginx/b; proxy_temp_path $dir/nginx/p; fastcgi_temp_path $dir/nginx/f;
    uwsgi_temp_path $dir/nginx/u; scgi_temp_path $dir/nginx/s;
    server { listen 127.0.0.1:$up1 backlog=4096; location / { default_type text/plain; return 200 "$body"; } }
    server { listen 127.0.0.1:$up2 backlog=4096; location / { default_type text/plain; return 200 "$body"; } }
}
CONF
  taskset -c "$cpu" nginx -p "$dir/nginx" -c "$dir/origin.conf" -g 'daemon off;' &
  ORIGIN_PID=$!
}

# wait_serving PORT: until something answers HTTP on PORT (10 s at most; the load that follows fails loudly if not).
wait_serving() {
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done
}

# setup_bench RUN OUTDIR CPU PORT1 PORT2: the harness copy, a fresh build, the origin; everything started
# is recorded in PIDS and stopped on exit; UPSTREAMS names the origin's two endpoints.
setup_bench() {
  ensure_peers
  mkdir -p "$2"
  (cd "$REPO" && npm run build --silent)
  PIDS=()
  trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
  start_origin "$1" "$3" "$4" "$5"
  PIDS+=("$ORIGIN_PID")
  export UPSTREAMS="http://127.0.0.1:$4,http://127.0.0.1:$5"
}
