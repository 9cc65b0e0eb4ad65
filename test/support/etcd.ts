/**
 * A real, single-member etcd for tests: free loopback ports, a temp data dir, helpers that
 * write through the same HTTP/JSON gateway the source reads, and stop/start on the same
 * ports and data (for "etcd down, then back"). Killed when the test process exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { terminate } from './server-process.js';

/** A running (or stopped) test etcd. */
export interface TestEtcd {
  /** Client URL, e.g. `http://127.0.0.1:40123`. */
  readonly url: string;
  put(key: string, value: string): Promise<void>;
  del(key: string): Promise<void>;
  /** Deletes every key under `prefix`. */
  delPrefix(prefix: string): Promise<void>;
  /** SIGSTOP: connections stay open but nothing answers (a silently dead peer). */
  pause(): void;
  /** SIGCONT. */
  resume(): void;
  /** SIGTERM and wait for exit; data and ports are kept for `start`. */
  stop(): Promise<void>;
  /** Starts again on the same ports and data dir; resolves when healthy. */
  start(): Promise<void>;
  /** Stops it and removes the data dir. */
  close(): Promise<void>;
}

/** A loopback TCP port that was free a moment ago. */
export async function freeTcpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

function prefixEnd(prefix: string): string {
  const buf = Buffer.from(prefix, 'utf8');
  for (let i = buf.length - 1; i >= 0; i--) {
    if ((buf[i] as number) < 0xff) {
      buf[i] = (buf[i] as number) + 1;
      return buf.subarray(0, i + 1).toString('base64');
    }
  }
  return Buffer.from([0]).toString('base64');
}

/** Starts etcd and waits until `/health` says so. */
export async function startEtcd(): Promise<TestEtcd> {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-etcd-'));
  const clientPort = await freeTcpPort();
  let peerPort = await freeTcpPort();
  while (peerPort === clientPort) peerPort = await freeTcpPort();
  const url = `http://127.0.0.1:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const agent = new Agent({ keepAliveTimeout: 1000 });
  let child: ChildProcess | null = null;
  let log = '';
  const killOnExit = (): void => {
    child?.kill('SIGKILL');
  };
  process.on('exit', killOnExit);

  const post = async (path: string, body: unknown): Promise<void> => {
    const res = await request(`${url}${path}`, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
      dispatcher: agent,
    });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new Error(`etcd ${path}: HTTP ${res.statusCode}: ${text}`);
  };

  const start = async (): Promise<void> => {
    log = '';
    const proc = spawn(
      'etcd',
      [
        '--name', 'test',
        '--data-dir', join(dir, 'data'),
        '--listen-client-urls', url,
        '--advertise-client-urls', url,
        '--listen-peer-urls', peerUrl,
        '--initial-advertise-peer-urls', peerUrl,
        '--initial-cluster', `test=${peerUrl}`,
        '--initial-cluster-state', 'new',
        '--logger', 'zap',
        '--log-level', 'error',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    child = proc;
    proc.stderr?.on('data', (chunk: Buffer) => {
      log = (log + chunk.toString('utf8')).slice(-4000);
    });
    const deadline = performance.now() + 15_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`etcd exited with ${proc.exitCode}: ${log}`);
      try {
        const res = await request(`${url}/health`, { dispatcher: agent, headersTimeout: 1000, bodyTimeout: 1000 });
        const text = await res.body.text();
        if (res.statusCode === 200 && text.includes('"true"')) return;
      } catch {
        // not up yet
      }
      if (performance.now() > deadline) throw new Error(`etcd did not become healthy: ${log}`);
      await sleep(50);
    }
  };

  const stop = async (): Promise<void> => {
    const proc = child;
    child = null;
    await terminate(proc);
  };

  await start();
  return {
    url,
    put: (key, value) => post('/v3/kv/put', { key: b64(key), value: b64(value) }),
    del: (key) => post('/v3/kv/deleterange', { key: b64(key) }),
    delPrefix: (prefix) => post('/v3/kv/deleterange', { key: b64(prefix), range_end: prefixEnd(prefix) }),
    pause: () => {
      child?.kill('SIGSTOP');
    },
    resume: () => {
      child?.kill('SIGCONT');
    },
    stop,
    start,
    async close() {
      await stop();
      process.off('exit', killOnExit);
      await agent.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
