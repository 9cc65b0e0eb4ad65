#!/usr/bin/env node
// The "where the time goes" table (test/bench/profile.sh): node profile-report.js PROFILES.txt, whose lines
// are "NAME REQUESTS FILE.cpuprofile". Busy self time (idle left out) per request by category, one column per
// profile, and each profile's top self-time functions.
import { readFileSync } from 'node:fs';

const list = process.argv[2];
if (!list) throw new Error('usage: profile-report.js PROFILES.txt');

/** What a sampled frame is charged to; null: idle. */
function category(frame) {
  const { url, functionName: fn } = frame;
  if (fn === '(idle)') return null;
  if (['writev', 'writeLatin1String', 'writeBuffer', 'writeUtf8String'].includes(fn)) return 'socket writes (the syscalls)';
  if (fn === '(garbage collector)') return 'V8: garbage collector';
  if (fn === '(program)' || fn === 'runMicrotasks') return 'V8: (program), microtasks';
  if (url.includes('node_modules/undici') || url.startsWith('wasm://')) return 'undici (client, llhttp wasm)';
  if (/node:_http_|node:http/.test(url)) return 'node:http (server, parser glue, response)';
  if (url.startsWith('node:internal/modules') || fn === 'compileSourceTextModule' || fn === 'wrapSafe') return 'startup (module loading)';
  if (url.startsWith('node:')) return 'node: streams, net, events, timers, ticks, buffers, crypto';
  if (url.includes('/lib/observe/') || url.includes('node_modules/prom-client')) return 'ours: access log, metrics';
  if (url.includes('/lib/pipeline/')) return 'ours: pipeline stages, attempts';
  if (/\/lib\/(http|server|routing)\//.test(url)) return 'ours: listener, headers, routing';
  if (url.includes('/dist/')) return 'ours: core, resilience, balancer, upstream';
  if (url.includes('undici-forwarder') || url.includes('mesh-floor')) return "the peer's own script";
  if (url.includes('node_modules/')) return 'other packages';
  return 'native (C++ builtins, other)';
}

function load(file, requests) {
  const p = JSON.parse(readFileSync(file, 'utf8'));
  const nodes = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  const byCategory = new Map();
  const byFunction = new Map();
  let busy = 0;
  for (const [id, us] of self) {
    const frame = nodes.get(id).callFrame;
    const c = category(frame);
    if (c === null) continue;
    busy += us;
    byCategory.set(c, (byCategory.get(c) ?? 0) + us);
    const where = frame.url ? ` ${frame.url.replace(/^.*\/(dist|node_modules)\//, '$1/')}:${frame.lineNumber + 1}` : '';
    const key = `${frame.functionName || '(anonymous)'}${where}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + us);
  }
  return { requests, busy, byCategory, byFunction };
}

const runs = readFileSync(list, 'utf8').trim().split('\n').map((line) => {
  const [name, requests, file] = line.split(' ');
  return { name, ...load(file, Number(requests)) };
});
const categories = [...new Set(runs.flatMap((r) => [...r.byCategory.keys()]))].sort(
  (a, b) => (runs[0].byCategory.get(b) ?? 0) - (runs[0].byCategory.get(a) ?? 0),
);
const cell = (r, us) => `${(us / r.requests).toFixed(1)} (${((100 * us) / r.busy).toFixed(1)}%)`;
console.log(`\nBusy self time, µs per request (share of busy time): ${runs.map((r) => `${r.name} ${r.requests} requests`).join(', ')}\n`);
console.log(`| | ${runs.map((r) => r.name).join(' | ')} |`);
console.log(`|---|${runs.map(() => '---:').join('|')}|`);
for (const c of categories) console.log(`| ${c} | ${runs.map((r) => cell(r, r.byCategory.get(c) ?? 0)).join(' | ')} |`);
console.log(`| busy total | ${runs.map((r) => `${(r.busy / r.requests).toFixed(1)}`).join(' | ')} |`);
for (const r of runs) {
  console.log(`\nTop self time, ${r.name} (µs per request):`);
  for (const [fn, us] of [...r.byFunction].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`  ${(us / r.requests).toFixed(2).padStart(6)}  ${fn}`);
}
