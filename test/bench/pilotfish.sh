#!/usr/bin/env bash
# PROXY_CMD for the peers harness: writes the bench policy from PORT and UPSTREAMS (start-for-bench.js
# --write), then *becomes* Pilotfish (exec). The harness takes CPU and peak RSS over the process tree it
# started, so no wrapper process may stay alive beside Pilotfish: a node wrapper alone is ~40 MiB of RSS.
# BENCH_NODE_FLAGS: node flags instead of the shipped ones (node-flags.sh), e.g. a V8 option under test.
# BENCH_POLICY_APPEND: YAML appended to the policy (a variant in the same rounds, e.g. the access log on).
# BENCH_RUN_ARGS: arguments added to `pilotfish run` (e.g. --validate-in-place), word-split.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/node-flags.sh"
policy=${BENCH_POLICY_FILE:?BENCH_POLICY_FILE (where to write the policy) is required}
node "$here/start-for-bench.js" --write "$policy"
[[ -z ${BENCH_POLICY_APPEND:-} ]] || printf '%s\n' "$BENCH_POLICY_APPEND" >>"$policy"
# shellcheck disable=SC2086 # BENCH_NODE_FLAGS (node flags to try) and BENCH_RUN_ARGS: word-split on purpose
exec node ${BENCH_NODE_FLAGS-${PILOTFISH_NODE_FLAGS[*]}} "$here/../../dist/cmd/pilotfish.js" run --policy "$policy" ${BENCH_RUN_ARGS:-}
