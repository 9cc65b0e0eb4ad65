#!/usr/bin/env node
// Cost per call of a new request id: node:crypto's randomUUID() against lib/http/request-id.ts
// (`node test/bench/request-id.js`, after `npm run build`). 5 alternating rounds of 2M calls each;
// the time includes collecting the garbage each makes, which is why the two are compared in one loop.
import { randomUUID } from 'node:crypto';
import { newRequestId } from '../../dist/lib/http/request-id.js';

let sink = 0;
for (let round = 1; round <= 5; round++) {
  for (const [name, make] of [['randomUUID', randomUUID], ['newRequestId', newRequestId]]) {
    const calls = 2_000_000;
    const started = process.hrtime.bigint();
    for (let i = 0; i < calls; i++) sink += make().length;
    console.log(`round ${round} ${name.padEnd(12)} ${(Number(process.hrtime.bigint() - started) / calls).toFixed(0)} ns/call`);
  }
}
if (sink === 0) console.log('');
