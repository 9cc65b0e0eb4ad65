// Reads the TAP results tap saved for this run (.tap/test-results) and prints one line,
// `N passed, N failed`, counting leaf assertions at every subtest depth (a subtest's own
// summary line is not counted again). A test file that crashed or never finished its plan
// counts as a failure; a run with no results at all counts as one failure, so an empty run
// can never look green. Exit code: 0 only when something passed and nothing failed.
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

const leaves = { pass: 0, fail: 0, skip: 0 };

// Counts the asserts of one parser level that are not subtest summaries, then its children.
function countLeaves(parser) {
  let childOpen = false;
  parser.on('child', (child) => {
    childOpen = true;
    countLeaves(child);
  });
  parser.on('assert', (res) => {
    if (childOpen) {
      childOpen = false;
      return; // the summary line of the subtest just counted
    }
    if (res.todo || res.skip) leaves.skip++;
    else if (res.ok) leaves.pass++;
    else leaves.fail++;
  });
}

function parse(text) {
  return new Promise((resolve) => {
    const parser = new Parser((results) => resolve(results));
    countLeaves(parser);
    parser.end(text);
  });
}

const broken = [];
const found = await files(root);
for (const file of found) {
  const before = leaves.fail;
  const results = await parse(await readFile(file, 'utf8'));
  if (!results.ok && leaves.fail === before) {
    leaves.fail += 1; // crashed, bailed out or plan not met without a failing assertion
    broken.push(file);
  }
}
if (found.length === 0) leaves.fail += 1;
for (const file of broken) process.stderr.write(`incomplete test file: ${file}\n`);
const passed = leaves.pass;
const failed = leaves.fail;
const line = `${passed} passed, ${failed} failed${leaves.skip ? `, ${leaves.skip} skipped` : ''}`;
await writeFile('.tap/summary.txt', line + '\n');
process.stdout.write(line + '\n');
process.exitCode = failed === 0 && passed > 0 ? 0 : 1;
