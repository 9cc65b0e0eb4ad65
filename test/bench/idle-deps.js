// The floor under Pilotfish's idle memory (idle-rss.sh's `libraries-only` row): a process that loads what
// the sidecar loads from its dependencies, the way it loads them (undici's and prom-client's parts through
// dist/lib/core/undici.js and dist/lib/observe/prom-client.js, node:http, http2 and tls), and none of
// Pilotfish's own modules, then idles. The sidecar's RSS above this row is its own code and state. zod and
// yaml are not here: `pilotfish run` validates its policy in a child process (lib/policy/load-apart.ts).
import { setInterval } from 'node:timers';

const dist = new URL('../../dist/lib/', import.meta.url);
await Promise.all([
  import(new URL('core/undici.js', dist).href),
  import(new URL('observe/prom-client.js', dist).href),
  import('node:http'),
  import('node:http2'),
  import('node:tls'),
]);
setInterval(() => {}, 1000);
