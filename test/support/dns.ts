/**
 * A real DNS server for tests: dnsmasq on a free loopback port, authoritative for one
 * zone (unknown names in it get NXDOMAIN, not REFUSED). A/AAAA records live in a hosts
 * file that SIGHUP reloads; SRV records live in the config, so changing them restarts
 * dnsmasq on the same port. `pause` (SIGSTOP) makes it unresponsive, `stop` makes it gone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { promises as dnsPromises } from 'node:dns';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freeTcpPort } from './etcd.js';
import { terminate } from './server-process.js';

/** One SRV record. */
export interface SrvRecord {
  readonly name: string;
  readonly target: string;
  readonly port: number;
  readonly priority: number;
  readonly weight: number;
}

/** What the server answers. Names should be under the server's zone (default `test`). */
export interface DnsRecords {
  /** name → IPv4 addresses */
  readonly a?: Readonly<Record<string, readonly string[]>>;
  /** name → IPv6 addresses */
  readonly aaaa?: Readonly<Record<string, readonly string[]>>;
  readonly srv?: readonly SrvRecord[];
}

/** A running test DNS server. */
export interface TestDns {
  /** For the policy's `resolvers:`. */
  readonly server: { readonly host: string; readonly port: number };
  /** Replaces every record; resolves once the server answers with the new A/AAAA records. */
  setRecords(records: DnsRecords): Promise<void>;
  /** SIGSTOP: queries time out. */
  pause(): void;
  /** SIGCONT. */
  resume(): void;
  /** Kills it: queries are refused (ICMP port unreachable). */
  stop(): Promise<void>;
  /** Starts it again on the same port with the current records. */
  start(): Promise<void>;
  close(): Promise<void>;
}

async function udpPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createSocket('udp4');
    socket.once('error', () => {
      socket.close();
      resolve(false);
    });
    socket.bind(port, '127.0.0.1', () => socket.close(() => resolve(true)));
  });
}

/** Starts dnsmasq with `records` and waits until it answers. */
export async function startDns(records: DnsRecords = {}, opts: { zone?: string } = {}): Promise<TestDns> {
  const zone = opts.zone ?? 'test';
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-dns-'));
  const hostsFile = join(dir, 'hosts');
  const confFile = join(dir, 'dnsmasq.conf');
  let port = await freeTcpPort();
  while (!(await udpPortFree(port))) port = await freeTcpPort();
  let current: DnsRecords = records;
  // /usr/sbin is not on every user's PATH.
  const binary = await access('/usr/sbin/dnsmasq').then(
    () => '/usr/sbin/dnsmasq',
    () => 'dnsmasq',
  );
  let child: ChildProcess | null = null;
  let log = '';
  const killOnExit = (): void => {
    child?.kill('SIGKILL');
  };
  process.on('exit', killOnExit);
  const probe = new dnsPromises.Resolver({ timeout: 300, tries: 1 });
  probe.setServers([`127.0.0.1:${port}`]);

  const writeRecords = async (r: DnsRecords): Promise<void> => {
    const hosts: string[] = [];
    for (const [name, ips] of Object.entries(r.a ?? {})) for (const ip of ips) hosts.push(`${ip} ${name}`);
    for (const [name, ips] of Object.entries(r.aaaa ?? {})) for (const ip of ips) hosts.push(`${ip} ${name}`);
    await writeFile(hostsFile, hosts.join('\n') + '\n');
    const conf = [
      `local=/${zone}/`,
      'local-ttl=0',
      ...(r.srv ?? []).map((s) => `srv-host=${s.name},${s.target},${s.port},${s.priority},${s.weight}`),
    ];
    await writeFile(confFile, conf.join('\n') + '\n');
  };

  const answersFor = async (name: string, family: 4 | 6): Promise<string[] | string> => {
    try {
      const list = family === 4 ? await probe.resolve4(name) : await probe.resolve6(name);
      return list.sort();
    } catch (err) {
      return String((err as { code?: unknown }).code);
    }
  };

  /** Until the server gives the expected A/AAAA answers (and NXDOMAIN for names it no longer has). */
  const settle = async (r: DnsRecords, previous: DnsRecords): Promise<void> => {
    const expected: [string, 4 | 6, string[]][] = [];
    for (const [name, ips] of Object.entries(r.a ?? {})) expected.push([name, 4, [...ips].sort()]);
    for (const [name, ips] of Object.entries(r.aaaa ?? {})) expected.push([name, 6, [...ips].sort()]);
    const gone = [...Object.keys(previous.a ?? {}), ...Object.keys(previous.aaaa ?? {})].filter(
      (n) => !Object.hasOwn(r.a ?? {}, n) && !Object.hasOwn(r.aaaa ?? {}, n),
    );
    const deadline = performance.now() + 5000;
    for (;;) {
      let ok = (await answersFor(`probe.${zone}`, 4)) === 'ENOTFOUND';
      for (const [name, family, ips] of expected) {
        if (!ok) break;
        ok = JSON.stringify(await answersFor(name, family)) === JSON.stringify(ips);
      }
      for (const name of gone) {
        if (!ok) break;
        ok = (await answersFor(name, 4)) === 'ENOTFOUND';
      }
      if (ok) return;
      if (performance.now() > deadline) throw new Error(`dnsmasq did not serve the records: ${log}`);
      await sleep(25);
    }
  };

  const start = async (): Promise<void> => {
    log = '';
    const args = [
      '--no-daemon',
      `--port=${port}`,
      '--listen-address=127.0.0.1',
      '--bind-interfaces',
      '--no-resolv',
      '--no-hosts',
      `--conf-file=${confFile}`,
      `--addn-hosts=${hostsFile}`,
      '--log-facility=-',
    ];
    // As root dnsmasq drops to `nobody`, which cannot read our temp files.
    if (process.getuid?.() === 0) args.push('--user=root');
    const proc = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    child = proc;
    proc.stderr?.on('data', (chunk: Buffer) => {
      log = (log + chunk.toString('utf8')).slice(-4000);
    });
    try {
      await settle(current, {});
    } catch (err) {
      if (proc.exitCode !== null) throw new Error(`dnsmasq exited with ${proc.exitCode}: ${log}`);
      throw err;
    }
  };

  const stop = async (): Promise<void> => {
    const proc = child;
    child = null;
    await terminate(proc);
  };

  await writeRecords(current);
  await start();
  return {
    server: { host: '127.0.0.1', port },
    async setRecords(next) {
      const previous = current;
      current = next;
      await writeRecords(next);
      const srvChanged = JSON.stringify(previous.srv ?? []) !== JSON.stringify(next.srv ?? []);
      if (srvChanged || child === null) {
        // SRV lines live in the config, which only a restart re-reads.
        if (child !== null) {
          await stop();
          await start();
        }
        return;
      }
      child.kill('SIGHUP');
      await settle(next, previous);
    },
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
      probe.cancel();
      process.off('exit', killOnExit);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
