#!/usr/bin/env node
// Paired per-round ratios from one or more harness runs (`node test/bench/paired.js [--base NAME] [--conns N]
// RESULTS.jsonl...`): for each target, its proxy CPU µs per request and requests/s divided by the base
// target's (the bare undici forwarder by default) in the same round, then the median (min–max) over all rounds.
// On a noisy VM only such paired ratios say anything: the two were measured back to back under the same
// steal. Also prints each target's medians, peak RSS and p50.
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
let base = 'undici-forwarder';
let conns = 64;
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--base') base = args[++i];
  else if (args[i] === '--conns') conns = Number(args[++i]);
  else files.push(args[i]);
}
if (files.length === 0) throw new Error('usage: paired.js [--base NAME] [--conns N] RESULTS.jsonl...');

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const range = (xs, digits) => `${median(xs).toFixed(digits)} (${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)})`;

/** run#round → target → { cpu µs/req, req/s, peak RSS MiB, p50 µs } */
const rounds = new Map();
files.forEach((file, run) => {
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const r = JSON.parse(line);
    if (r.conns !== conns || !r.wrk?.requests) continue;
    const key = `${run}#${r.round}`;
    if (!rounds.has(key)) rounds.set(key, new Map());
    rounds.get(key).set(r.target, {
      cpu: (r.proxy_cpu_ticks * 10_000) / r.wrk.requests,
      rps: r.wrk.requests / (r.wrk.duration_us / 1e6),
      rss: r.proxy_hwm_kb / 1024,
      p50: r.wrk.p50_us,
    });
  }
});

const targets = [...new Set([...rounds.values()].flatMap((m) => [...m.keys()]))].filter((t) => t !== 'direct');
console.log(`${rounds.size} rounds at -c${conns}; ratios are per round against ${base}\n`);
console.log('| target | requests/s | × base | proxy CPU µs/req | × base | peak RSS MiB | p50 µs |');
console.log('|---|---:|---:|---:|---:|---:|---:|');
for (const t of targets) {
  const own = [...rounds.values()].map((m) => m.get(t)).filter(Boolean);
  const pairs = [...rounds.values()].filter((m) => m.has(t) && m.has(base)).map((m) => [m.get(t), m.get(base)]);
  const rpsRatio = pairs.map(([a, b]) => a.rps / b.rps);
  const cpuRatio = pairs.map(([a, b]) => a.cpu / b.cpu);
  console.log(
    `| ${t} | ${range(own.map((x) => x.rps), 0)} | ${t === base ? '1' : range(rpsRatio, 2)} | ${range(own.map((x) => x.cpu), 1)} | ` +
      `${t === base ? '1' : range(cpuRatio, 2)} | ${Math.max(...own.map((x) => x.rss)).toFixed(0)} | ${median(own.map((x) => x.p50)).toFixed(0)} |`,
  );
}
