import t from 'tap';
import { newRequestId } from '../../lib/http/request-id.js';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

t.test('new request ids are version-4 UUIDs, all different, across many refills of the random bytes', async (t) => {
  const n = 20_000; // 78 refills of 256
  const seen = new Set<string>();
  let malformed = 0;
  const nibbles = new Array<number>(16).fill(0);
  for (let i = 0; i < n; i++) {
    const id = newRequestId();
    if (!UUID_V4.test(id)) malformed++;
    seen.add(id);
    // The first 8 hex digits carry no fixed bits: each of the 16 digits should come up ~1/16 of the time.
    for (let j = 0; j < 8; j++) nibbles[parseInt(id[j] as string, 16)]!++;
  }
  t.equal(malformed, 0, 'every id matches xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx');
  t.equal(seen.size, n, `${n} ids, no two alike`);
  const expected = (8 * n) / 16;
  t.ok(nibbles.every((c) => Math.abs(c - expected) < expected * 0.05), `hex digits evenly spread (${nibbles.join(' ')}; ~${expected} each)`);
});

t.test('an id is its own string: the next one does not change it (the text buffer is reused)', async (t) => {
  const first = newRequestId();
  const copy = `${first}`;
  newRequestId();
  t.equal(first, copy);
});
