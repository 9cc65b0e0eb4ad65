/**
 * A port whose TCP connects never complete: a listener (in a python3 child, since Node accepts
 * every connection itself) with a full accept queue that never accepts, so the kernel drops
 * further SYNs and a connect stays pending — a blackholed endpoint, on loopback.
 */
import { spawn } from 'node:child_process';
import type { Teardown } from './spawn.js';

const SCRIPT = `
import socket, time
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(0)
print(s.getsockname()[1], flush=True)
held = []
for _ in range(4):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(('127.0.0.1', s.getsockname()[1]))
    except BlockingIOError: pass
    held.append(c)
time.sleep(120)
`;

/** Starts a blackhole and resolves with its port; it is killed on `t`'s teardown. */
export function startBlackhole(t: Teardown): Promise<number> {
  const child = spawn('python3', ['-c', SCRIPT], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => child.kill('SIGKILL'));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.stdout.once('data', (chunk: Buffer) => resolve(Number(chunk.toString().trim())));
  });
}
