/**
 * The repository's root, found by walking up from this file to the first folder with a
 * package.json. The tests run as TypeScript (`test/`) or compiled (`.tap-js/test/`, what
 * `npm test` runs), so a fixed `../../` would point to different places.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRepo(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

/** Absolute path of the repository root (no trailing slash). */
export const REPO = findRepo(dirname(fileURLToPath(import.meta.url)));

/** Absolute path of `rel` inside the repository. */
export const inRepo = (rel: string): string => join(REPO, rel);
