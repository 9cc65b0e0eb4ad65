# The node flags Pilotfish ships with: the Dockerfile's ENTRYPOINT runs `node <these> dist/cmd/pilotfish.js`
# (test/ops/dockerfile.test.ts checks the two agree), and the bench scripts source this file, so they
# measure what the image runs.
#
# --max-semi-space-size=8: V8's young generation at 2 × 8 MiB instead of Node's default 2 × 16. Under the
# benchmark's load it cut Pilotfish's peak RSS from 114–119 to 102–105 MiB at no measurable CPU cost
# (0.95×, 0.73–1.53, paired over 16 rounds); 4 MiB reached 95–98 MiB but cost 1.05–1.19× the CPU.
#
# --no-parallel-scavenge: young-generation collections on the main thread only. Pinned to one core (as
# the bench pins the proxy, and as a CPU limit bills every thread), the helper threads only add their
# synchronisation: paired per round against the same build without it, CPU per request 0.79× over h2c
# and 0.81×, 0.86× and 0.96× over HTTP/1.1 in four runs, p99 lower in each HTTP/1.1 run, peak RSS the same.
# shellcheck disable=SC2034 # used by the scripts that source this file
PILOTFISH_NODE_FLAGS=(--max-semi-space-size=8 --no-parallel-scavenge)
