#!/usr/bin/env bash
# Sourced by the bench scripts (h2c.sh, mtls.sh): interleaved rounds over $TARGETS, the order rotating
# each round, and each run redone (up to $MAX_REDO times) while other processes used more than
# $FOREIGN_MAX_PCT % of a core, as the peer harness does. The sourcing script defines
# `measure_once ROUND TARGET`, which sets M_FOREIGN (foreign CPU %), M_JSON (the run's JSON object,
# left open) and M_LINE (its line for the terminal); results are appended to $JSONL.

measure() {  # measure ROUND TARGET: redone (up to MAX_REDO) while other processes disturb it, like the harness
  local tries=0 disturbed=false
  measure_once "$1" "$2"
  while ((M_FOREIGN > FOREIGN_MAX_PCT && tries < MAX_REDO)); do
    tries=$((tries + 1))
    echo "  (r$1 $2: other processes used ${M_FOREIGN}% of a core, redo $tries/$MAX_REDO)"
    measure_once "$1" "$2"
  done
  ((M_FOREIGN > FOREIGN_MAX_PCT)) && disturbed=true
  echo "$M_JSON,\"redos\":$tries,\"disturbed\":$disturbed}" >>"$JSONL"
  echo "$M_LINE$($disturbed && echo "  DISTURBED: foreign CPU ${M_FOREIGN}%")"
}

run_rounds() {
  local TLIST r i
  read -r -a TLIST <<<"$TARGETS"
  for ((r = 1; r <= ROUNDS; r++)); do
    echo "round $r/$ROUNDS"
    for ((i = 0; i < ${#TLIST[@]}; i++)); do measure "$r" "${TLIST[$(((i + r - 1) % ${#TLIST[@]}))]}"; done  # order rotates
  done
}
