#!/usr/bin/env bash
# The whole test command (`npm test`): system tools, typecheck, lint, build, then every tap test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash test/support/install-tools.sh
npx tsc -p tsconfig.json --noEmit
npx eslint .
npx tsc -p tsconfig.build.json
npx tap "$@"
