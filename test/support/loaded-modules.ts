/**
 * The files a fresh process holds once the sidecar's modules are loaded (the build's
 * dist/lib/app.js, what `pilotfish run` imports): CommonJS files from require's cache and ES
 * modules as a resolve hook saw them, as paths, to check what stays out.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { inRepo } from './repo.js';

export async function modulesLoadedByApp(): Promise<string[]> {
  const app = pathToFileURL(inRepo('dist/lib/app.js')).href;
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-modules-'));
  try {
    const esmFile = join(dir, 'esm.txt');
    const script = `
      import { createRequire } from 'node:module';
      await import(${JSON.stringify(app)});
      console.log(JSON.stringify(Object.keys(createRequire(import.meta.url).cache)));
    `;
    const { stdout } = await promisify(execFile)(process.execPath, [...recordModulesTo(esmFile), '--input-type=module', '-e', script]);
    const esm = (await readFile(esmFile, 'utf8')).split('\n').filter((url) => url.startsWith('file:')).map((url) => fileURLToPath(url));
    return [...(JSON.parse(stdout) as string[]), ...esm];
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Node arguments that make a process append every URL its ES module loader resolves to `file`,
 * a line each (for a spawned sidecar: `spawnProxy(…, { nodeArgs })`). Only that process: a
 * child it forks with its own `execArgv` does not inherit them.
 */
export function recordModulesTo(file: string): string[] {
  const hook = `
    import { appendFileSync } from 'node:fs';
    let out;
    export function initialize(data) { out = data.out; }
    export async function resolve(specifier, context, next) {
      const resolved = await next(specifier, context);
      appendFileSync(out, resolved.url + '\\n');
      return resolved;
    }`;
  const main = `import { register } from 'node:module';
    register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hook)}), { data: { out: ${JSON.stringify(file)} } });`;
  return ['--import', `data:text/javascript,${encodeURIComponent(main)}`];
}
