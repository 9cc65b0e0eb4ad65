/**
 * Starts a real Pilotfish in the test process on a policy written to a temp dir, with
 * listeners on port 0, and captures its access log and operational log.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Pilotfish, type StartOptions } from '../../lib/app.js';
import type { Logger } from '../../lib/observe/logger.js';

/** A running proxy for a test. */
export interface TestProxy {
  readonly app: Pilotfish;
  /** `http://127.0.0.1:PORT` of the outbound listener. */
  readonly url: string;
  /** `http://127.0.0.1:PORT` of the admin listener. */
  readonly admin: string;
  readonly dir: string;
  readonly policyFile: string;
  /** Access log records so far. */
  readonly accessLog: Record<string, unknown>[];
  /** Operational log messages so far. */
  readonly logs: { level: string; msg: string; fields?: Record<string, unknown> }[];
  /** The newest access log record, once the batch in flight is written. */
  lastLog(): Promise<Record<string, unknown> | undefined>;
  /** Writes a new policy (in place) and reloads. */
  rewrite(policy: string): Promise<boolean>;
  close(): Promise<void>;
}

/** Listener lines for a policy: both on 127.0.0.1:0. */
export const LISTENERS = `version: 1
listeners:
  outbound: { address: 127.0.0.1:0 }
  admin: { address: 127.0.0.1:0 }
`;

/**
 * A test's policy as written to disk: `LISTENERS` prepended unless it has its own
 * `listeners:`, and the access log (off by default) turned on unless it says otherwise,
 * because tests read what each request did from it.
 */
export function testPolicy(policy: string): string {
  const listened = policy.includes('listeners:') ? policy : `${LISTENERS}${policy}`;
  return /^accessLog:/m.test(listened) ? listened : `${listened.trimEnd()}\naccessLog: { enabled: true }\n`;
}

/**
 * Starts Pilotfish on `policy` (YAML, completed by `testPolicy`). The file watcher is off
 * unless `watch: true`: tests reload explicitly.
 */
export async function startProxy(policy: string, options: Partial<StartOptions> & { files?: Record<string, string> } = {}): Promise<TestProxy> {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-test-'));
  const policyFile = join(dir, 'pilotfish.yaml');
  for (const [name, content] of Object.entries(options.files ?? {})) await writeFile(join(dir, name), content);
  await writeFile(policyFile, testPolicy(policy));
  const accessLog: Record<string, unknown>[] = [];
  const logs: TestProxy['logs'] = [];
  const logger: Logger = { log: (level, msg, fields) => logs.push({ level, msg, fields }) };
  const accessLogOut = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) accessLog.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const app = await Pilotfish.start({ policyFile, logger, accessLogOut, watch: false, ...options });
  return {
    app,
    url: `http://127.0.0.1:${app.outboundAddress.port}`,
    admin: `http://127.0.0.1:${app.adminAddress.port}`,
    dir,
    policyFile,
    accessLog,
    logs,
    async lastLog() {
      await new Promise((resolve) => setImmediate(resolve));
      app.flushAccessLog();
      return accessLog.at(-1);
    },
    async rewrite(next) {
      await writeFile(policyFile, testPolicy(next));
      return app.reload();
    },
    async close() {
      await app.shutdown({ quietPeriodMs: 0 });
      await rm(dir, { recursive: true, force: true });
    },
  };
}
