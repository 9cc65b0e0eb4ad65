/**
 * Writes config/policy.schema.json from the zod schema: `npm run schema` after changing
 * lib/policy/schema.ts (a test fails while the committed file is stale).
 */
import { writeFile } from 'node:fs/promises';
import { renderPolicyJsonSchema } from '../lib/policy/json-schema.js';

// From cmd/ (source) or dist/cmd/ (built), config/ is found beside package.json.
const root = process.env.npm_package_json ? new URL('.', `file://${process.env.npm_package_json}`) : new URL('../', import.meta.url);
await writeFile(new URL('config/policy.schema.json', root), renderPolicyJsonSchema());
