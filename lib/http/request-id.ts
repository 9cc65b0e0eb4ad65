/**
 * New request ids: random (version 4) UUIDs, as Envoy puts in `x-request-id`. Node's
 * `randomUUID()` builds each one from twenty string concatenations, about 590 bytes of garbage a
 * request (test/bench/alloc-sites.sh); this writes the 36 characters into one reused buffer and
 * makes a single string of them. Random bytes come from the CSPRNG, 256 ids' worth at a time.
 */
import { randomFillSync } from 'node:crypto';

const IDS_PER_FILL = 256;
const random = Buffer.allocUnsafe(16 * IDS_PER_FILL);
let used = IDS_PER_FILL;
const text = Buffer.allocUnsafe(36);
const HEX = Buffer.from('0123456789abcdef', 'latin1');
const DASH = 0x2d;

/** A new random UUID, lower-case hex: `xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`. */
export function newRequestId(): string {
  if (used === IDS_PER_FILL) {
    randomFillSync(random);
    used = 0;
  }
  const from = 16 * used++;
  let at = 0;
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) text[at++] = DASH;
    let byte = random[from + i] as number;
    if (i === 6) byte = (byte & 0x0f) | 0x40; // version 4
    else if (i === 8) byte = (byte & 0x3f) | 0x80; // RFC 9562 variant
    text[at++] = HEX[byte >> 4] as number;
    text[at++] = HEX[byte & 0x0f] as number;
  }
  return text.toString('latin1', 0, 36);
}
