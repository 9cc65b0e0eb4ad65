/**
 * The files a fresh process holds once the sidecar's modules are loaded (the build's
 * dist/lib/app.js, what `pilotfish run` imports): CommonJS files from require's cache and ES
 * modules as a resolve hook saw them, as paths, to check what stays out.
 */
import { execFile } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { inRepo } from './repo.js';

/** Reports every URL the ES module loader resolves, through a port (hooks run on their own thread). */
const RESOLVE_HOOK = `
  let port;
  export function initialize(data) { port = data.port; }
  export async function resolve(specifier, context, next) {
    const resolved = await next(specifier, context);
    port.postMessage(resolved.url);
    return resolved;
  }`;

export async function modulesLoadedByApp(): Promise<string[]> {
  const app = pathToFileURL(inRepo('dist/lib/app.js')).href;
  const script = `
    import { createRequire, register } from 'node:module';
    import { fileURLToPath } from 'node:url';
    import { MessageChannel } from 'node:worker_threads';
    const { port1, port2 } = new MessageChannel();
    const esm = [];
    port1.on('message', (url) => esm.push(url));
    register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(RESOLVE_HOOK)}), { data: { port: port2 }, transferList: [port2] });
    await import(${JSON.stringify(app)});
    // The hook's last reports cross the port after the import settles.
    await new Promise((resolve) => setTimeout(resolve, 100));
    port1.close();
    const files = esm.filter((url) => url.startsWith('file:')).map((url) => fileURLToPath(url));
    console.log(JSON.stringify([...Object.keys(createRequire(import.meta.url).cache), ...files]));
  `;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script]);
  return JSON.parse(stdout) as string[];
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
