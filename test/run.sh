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
npx tap "$@"
tap_status=$?
node test/support/summary.mjs
summary_status=$?
[ "$tap_status" -eq 0 ] && [ "$summary_status" -eq 0 ]
