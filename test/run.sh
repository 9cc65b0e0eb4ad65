#!/usr/bin/env bash
# The whole test command (`npm test`): system tools, typecheck, lint, build, then every tap
# test; ends with one line `N passed, N failed` counted from tap's saved results.
set -uo pipefail
cd "$(dirname "$0")/.."
set -e
bash test/support/install-tools.sh
npx tsc -p tsconfig.json --noEmit
npx eslint .
npx tsc -p tsconfig.build.json
set +e
rm -rf .tap/test-results .tap/summary.txt
if [ "$#" -gt 0 ]; then
  npx tap "$@"
  tap_status=$?
else
  # Two passes. Unit tests (injected clocks, no load, no timing bounds) run two files at a time;
  # every test that starts processes under load or measures time runs alone, one file at a time,
  # since two of them at once on two cores would measure each other.
  mapfile -t unit < <(ls test/{auth,balancer,core,http,identity,observe,ops,pipeline,resilience,runtime}/*.test.ts test/pipeline/stages/*.test.ts test/policy/*.test.ts test/quota/lease-policy.test.ts | grep -v 'test/policy/fuzz.test.ts')
  mapfile -t rest < <(ls test/*/*.test.ts test/*/*/*.test.ts | grep -v -x -F -f <(printf '%s\n' "${unit[@]}"))
  npx tap --jobs=2 "${unit[@]}"
  unit_status=$?
  npx tap --jobs=1 "${rest[@]}"
  rest_status=$?
  tap_status=$(( unit_status != 0 ? unit_status : rest_status ))
fi
node test/support/summary.mjs
summary_status=$?
[ "$tap_status" -eq 0 ] && [ "$summary_status" -eq 0 ]
