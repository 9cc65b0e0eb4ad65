#!/usr/bin/env node
// The soak's table and verdicts (test/bench/soak.sh): node soak-report.js RESULTS.jsonl SEGMENT_SECONDS
// Per minute of each target's load: requests/s and CPU µs/request (medians of its slices), RSS and heap at
// the minute's end. Verdicts for Pilotfish: last minute's requests/s ≥ 0.95× the first's (and the same ratio
// for the forwarder, which says how much the machine itself drifted), RSS growth after the first minute.
import { readFileSync } from 'node:fs';

const [file, segmentArg] = process.argv.slice(2);
if (!file) throw new Error('usage: soak-report.js RESULTS.jsonl SEGMENT_SECONDS');
const segment = Number(segmentArg ?? 30);
const rows = readFileSync(file, 'utf8').trim().split('\n').map((line) => JSON.parse(line));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const perMinute = Math.max(1, Math.round(60 / segment));

function minutes(target) {
  const mine = rows.filter((r) => r.target === target);
  const out = [];
  for (let i = 0; i < mine.length; i += perMinute) {
    const m = mine.slice(i, i + perMinute);
    const last = m[m.length - 1];
    out.push({ rps: median(m.map((r) => r.rps)), cpu: median(m.map((r) => r.cpu_us_per_req)), rss: last.rss_mib, heap: last.heap_mib });
  }
  return out;
}

const pf = minutes('pilotfish');
const fwd = minutes('forwarder');
console.log('\n| minute | Pilotfish req/s | CPU µs/req | RSS MiB | heap MiB | forwarder req/s | CPU µs/req | RSS MiB |');
console.log('|---:|---:|---:|---:|---:|---:|---:|---:|');
pf.forEach((m, i) => {
  const f = fwd[i] ?? {};
  console.log(`| ${i + 1} | ${m.rps.toFixed(0)} | ${m.cpu.toFixed(1)} | ${m.rss.toFixed(1)} | ${m.heap ?? '-'} | ${f.rps?.toFixed(0) ?? '-'} | ${f.cpu?.toFixed(1) ?? '-'} | ${f.rss?.toFixed(1) ?? '-'} |`);
});
const ratio = (ms) => ms[ms.length - 1].rps / ms[0].rps;
const growth = pf[pf.length - 1].rss - pf[0].rss;
console.log(`\nPilotfish last minute ÷ first: ${ratio(pf).toFixed(3)} req/s (bar ≥ 0.95), ${(pf[pf.length - 1].cpu / pf[0].cpu).toFixed(3)} CPU µs/req`);
console.log(`forwarder (the machine's own drift): ${ratio(fwd).toFixed(3)} req/s, ${(fwd[fwd.length - 1].cpu / fwd[0].cpu).toFixed(3)} CPU µs/req`);
console.log(`Pilotfish RSS after minute 1 → end: ${pf[0].rss.toFixed(1)} → ${pf[pf.length - 1].rss.toFixed(1)} MiB (growth ${growth.toFixed(1)}, bar ≤ 10); heap ${pf[0].heap} → ${pf[pf.length - 1].heap} MiB`);
