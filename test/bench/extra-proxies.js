#!/usr/bin/env node
// Patches a copy of the peers harness (its run.sh, given as the argument) to measure more than one proxy
// of ours in the same interleaved rounds: `EXTRA_PROXIES` holds "name|port|command" lines, each started
// like PROXY_CMD (pinned to PROXY_CPU, with PORT and UPSTREAMS). The shared harness takes one PROXY_CMD;
// comparing variants (tracing off, 1%, 100%) across separate runs would compare different machine states.
// Idempotent; fails loudly if the harness no longer has the lines it patches.
import { readFileSync, writeFileSync } from 'node:fs';

const file = process.argv[2];
if (!file) throw new Error('usage: extra-proxies.js PATH/TO/run.sh');
let text = readFileSync(file, 'utf8');
if (text.includes('EXTRA_PROXIES')) process.exit(0);

function after(anchor, addition) {
  if (!text.includes(anchor)) throw new Error(`${file}: the harness changed, cannot find:\n${anchor}`);
  text = text.replace(anchor, anchor + addition);
}

after(
  `  [[ " $TARGETS " == *" $PROXY_NAME "* ]] || TARGETS="$TARGETS $PROXY_NAME"
fi
`,
  `# Patched (test/bench/extra-proxies.js): EXTRA_PROXIES="name|port|cmd" lines, measured in the same rounds.
declare -A XCMD=()
while IFS='|' read -r xname xport xcmd; do
  [[ -z $xname ]] && continue
  TPORT[$xname]=$xport; XCMD[$xname]=$xcmd; TARGETS="$TARGETS $xname"
done <<< "\${EXTRA_PROXIES:-}"
`,
);
after(
  `      start "$t" "$PROXY_CPU" env PORT="$PROXY_PORT" bash -c "exec $PROXY_CMD" ;;
`,
  `    *)
      start "$t" "$PROXY_CPU" env PORT="\${TPORT[$t]}" bash -c "exec \${XCMD[$t]}" ;;
`,
);
writeFileSync(file, text);
