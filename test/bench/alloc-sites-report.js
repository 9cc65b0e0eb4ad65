#!/usr/bin/env node
// The "where the garbage comes from" table (test/bench/alloc-sites.sh): node alloc-sites-report.js SAMPLES.txt,
// whose lines are "NAME REQUESTS FILE.json" (sampled heap profiles, collected objects included). Bytes
// allocated per request by category, one column per target, then each target's top allocation sites.
import { readFileSync } from 'node:fs';

const list = process.argv[2];
if (!list) throw new Error('usage: alloc-sites-report.js SAMPLES.txt');

/** What an allocating frame is charged to (the function that allocated, as profile-report.js does for time). */
function category({ url, functionName: fn }) {
  if (url.includes('node_modules/undici')) return 'undici';
  if (/node:_http_|node:http/.test(url)) return 'node:http';
  if (url.startsWith('node:internal/modules') || fn === 'compileSourceTextModule') return 'module loading';
  if (url.startsWith('node:internal/crypto')) return 'node: crypto (request ids)';
  if (url.startsWith('node:internal/timers') || url === 'node:timers') return 'node: timers';
  if (url.startsWith('node:')) return 'node: streams, net, events, ticks, buffers';
  if (url.includes('undici-forwarder')) return "the forwarder's own script";
  if (url.includes('/lib/pipeline/')) return 'ours: pipeline stages, attempts';
  if (/\/lib\/(http|server|routing)\//.test(url)) return 'ours: listener, headers, routing';
  if (url.includes('/lib/observe/')) return 'ours: access log, metrics';
  if (url.includes('/dist/')) return 'ours: core, resilience, balancer, upstream';
  if (url.includes('node_modules/')) return 'other packages';
  return 'V8 and native (builtins, API)';
}

function load(file, requests) {
  const byCategory = new Map();
  const bySite = new Map();
  let total = 0;
  const walk = (node) => {
    if (node.selfSize > 0) {
      const f = node.callFrame;
      total += node.selfSize;
      const c = category(f);
      byCategory.set(c, (byCategory.get(c) ?? 0) + node.selfSize);
      const where = f.url ? ` ${f.url.replace(/^.*\/(dist|node_modules)\//, '$1/')}:${f.lineNumber + 1}` : '';
      const site = `${f.functionName || '(anonymous)'}${where}`;
      bySite.set(site, (bySite.get(site) ?? 0) + node.selfSize);
    }
    for (const child of node.children) walk(child);
  };
  walk(JSON.parse(readFileSync(file, 'utf8')).head);
  return { requests, total, byCategory, bySite };
}

const runs = readFileSync(list, 'utf8').trim().split('\n').map((line) => {
  const [name, requests, file] = line.split(' ');
  return { name, ...load(file, Number(requests)) };
});
const categories = [...new Set(runs.flatMap((r) => [...r.byCategory.keys()]))].sort((a, b) => (runs[0].byCategory.get(b) ?? 0) - (runs[0].byCategory.get(a) ?? 0));
const cell = (r, bytes) => `${(bytes / r.requests).toFixed(0)} (${((100 * bytes) / r.total).toFixed(1)}%)`;
console.log(`\nBytes allocated per request (share), sampled: ${runs.map((r) => `${r.name} ${r.requests} requests`).join(', ')}\n`);
console.log(`| | ${runs.map((r) => r.name).join(' | ')} |`);
console.log(`|---|${runs.map(() => '---:').join('|')}|`);
for (const c of categories) console.log(`| ${c} | ${runs.map((r) => cell(r, r.byCategory.get(c) ?? 0)).join(' | ')} |`);
console.log(`| total | ${runs.map((r) => (r.total / r.requests).toFixed(0)).join(' | ')} |`);
for (const r of runs) {
  console.log(`\nTop allocation sites, ${r.name} (bytes per request):`);
  for (const [site, bytes] of [...r.bySite].sort((a, b) => b[1] - a[1]).slice(0, 20)) console.log(`${(bytes / r.requests).toFixed(0).padStart(7)}  ${site}`);
}
