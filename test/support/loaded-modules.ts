/**
 * The CommonJS files a fresh process holds once the sidecar's modules are loaded (the build's
 * dist/lib/app.js, what `pilotfish run` imports): the dependencies' files, to check what stays out.
 */
import { execFile } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { inRepo } from './repo.js';

export async function modulesLoadedByApp(): Promise<string[]> {
  const app = pathToFileURL(inRepo('dist/lib/app.js')).href;
  const script = `
    import { createRequire } from 'node:module';
    await import(${JSON.stringify(app)});
    console.log(JSON.stringify(Object.keys(createRequire(import.meta.url).cache)));
  `;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script]);
  return JSON.parse(stdout) as string[];
}
