/**
 * Writes config/policy.schema.json from the zod schema. Run after changing lib/policy/schema.ts:
 * `node --import ./test/support/ts-loader.js scripts/gen-schema.ts` (a test fails while it is stale).
 */
import { writeFile } from 'node:fs/promises';
import { renderPolicyJsonSchema } from '../lib/policy/json-schema.js';

await writeFile(new URL('../config/policy.schema.json', import.meta.url), renderPolicyJsonSchema());
