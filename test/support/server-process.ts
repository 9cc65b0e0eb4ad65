/** What the real servers the tests run (etcd, dnsmasq, redis-server) share: how one is stopped. */
import type { ChildProcess } from 'node:child_process';

/**
 * Stops a server process and waits for its exit: SIGCONT first (a test may have paused it),
 * SIGTERM, then SIGKILL if it has not gone within `killAfterMs`. A process already gone is a no-op.
 */
export async function terminate(proc: ChildProcess | null, killAfterMs = 5000): Promise<void> {
  if (proc === null || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  proc.kill('SIGCONT');
  proc.kill('SIGTERM');
  const timer = setTimeout(() => proc.kill('SIGKILL'), killAfterMs);
  await exited;
  clearTimeout(timer);
}
