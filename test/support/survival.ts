/**
 * "Did the attack kill it?" for hostile-client tests on a spawned proxy: after a client
 * misbehaves, the process must still be running and answer the next ordinary request.
 */
import { servesOk, sleep } from './hostile.js';
import type { SpawnedProxy } from './spawn.js';

/** The last `chars` characters of the proxy's stderr (where an uncaught exception lands). */
export function stderrTail(proxy: SpawnedProxy, chars = 1_500): string {
  const text = proxy.stderr();
  return text.length > chars ? `…${text.slice(-chars)}` : text;
}

/**
 * Null when the proxy is still running and answers `GET path` for `host` with a 200 on a new
 * connection; otherwise what went wrong, with the tail of its stderr. Waits `settleMs` first,
 * so that an error the attack set off has had the time to kill the process.
 */
export async function stillServing(proxy: SpawnedProxy, host: string, path = '/alive', settleMs = 150): Promise<string | null> {
  await sleep(settleMs);
  if (proxy.running && (await servesOk(proxy, host, path, 3_000))) return null;
  if (!proxy.running) {
    const exit = await proxy.exited;
    return `the proxy process exited (code ${exit.code}, signal ${exit.signal}); stderr:\n${stderrTail(proxy)}`;
  }
  return `the proxy runs but did not answer GET ${path} (Host: ${host}) with 200 within 3 s`;
}
