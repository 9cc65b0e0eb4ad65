// Reads the TAP results tap saved for this run (.tap/test-results) and prints one line,
// `N passed, N failed`, counting assertions. A test file that crashed or never finished its
// plan counts as a failure; a run with no results at all counts as one failure, so an empty
// run can never look green. Exit code: 0 only when something passed and nothing failed.
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Parser } from 'tap-parser';

const root = '.tap/test-results';

async function files(dir) {
  const out = [];
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await files(path)));
    else if (entry.name.endsWith('.tap')) out.push(path);
  }
  return out;
}

function parse(text) {
  return new Promise((resolve) => {
    const parser = new Parser((results) => resolve(results));
    parser.end(text);
  });
}

let passed = 0;
let failed = 0;
const broken = [];
const found = await files(root);
for (const file of found) {
  const results = await parse(await readFile(file, 'utf8'));
  passed += results.pass;
  failed += results.fail;
  if (!results.ok && results.fail === 0) {
    failed += 1; // crashed, bailed out or plan not met without a failing assertion
    broken.push(file);
  }
}
if (found.length === 0) failed += 1;
for (const file of broken) process.stderr.write(`incomplete test file: ${file}\n`);
const line = `${passed} passed, ${failed} failed`;
await writeFile('.tap/summary.txt', line + '\n');
process.stdout.write(line + '\n');
process.exitCode = failed === 0 && passed > 0 ? 0 : 1;
