/**
 * A real redis-server for tests: a free loopback port, no persistence (`--save '' --appendonly
 * no`), and stop/start on the same port (for "Redis down, then back"). Killed when the test
 * process exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freeTcpPort } from './etcd.js';
import { terminate } from './server-process.js';

/** A running (or stopped) test Redis. */
export interface TestRedis {
  readonly port: number;
  /** `127.0.0.1:PORT`, as the policy's `redis.address` is written. */
  readonly address: string;
  /** SIGSTOP: connections stay open but nothing answers (a hung Redis). */
  pause(): void;
  /** SIGCONT. */
  resume(): void;
  /** SIGTERM and wait for exit (all data is lost: nothing is persisted); the port is kept for `start`. */
  stop(): Promise<void>;
  /** Starts again on the same port; resolves when it answers PING. */
  start(): Promise<void>;
  /** Stops it and removes its working dir. */
  close(): Promise<void>;
}

/** Sends PING on a fresh connection; true on +PONG. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let reply = '';
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString('latin1');
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}

/** Starts redis-server and waits until it answers. */
export async function startRedis(): Promise<TestRedis> {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-redis-'));
  const port = await freeTcpPort();
  let child: ChildProcess | null = null;
  let log = '';
  const killOnExit = (): void => {
    child?.kill('SIGKILL');
  };
  process.on('exit', killOnExit);

  const start = async (): Promise<void> => {
    log = '';
    const proc = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--loglevel', 'warning'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child = proc;
    const keep = (chunk: Buffer): void => {
      log = (log + chunk.toString('utf8')).slice(-4000);
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    const deadline = performance.now() + 10_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`redis-server exited with ${proc.exitCode}: ${log}`);
      if (await ping(port)) return;
      if (performance.now() > deadline) throw new Error(`redis-server did not answer PING: ${log}`);
      await sleep(20);
    }
  };

  const stop = async (): Promise<void> => {
    const proc = child;
    child = null;
    await terminate(proc);
  };

  await start();
  return {
    port,
    address: `127.0.0.1:${port}`,
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
      await rm(dir, { recursive: true, force: true });
    },
  };
}
