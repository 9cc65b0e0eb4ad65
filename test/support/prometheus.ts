/**
 * A real Prometheus server for tests (Debian's `prometheus` package, installed with promtool by
 * install/30-promtool.sh): its own temp dir for config and TSDB, a free loopback port, 1 s scrape and
 * rule evaluation intervals, and the PromQL HTTP API. Stopped on teardown and killed if the test
 * process exits first, so no server outlives the test.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { freeTcpPort } from './etcd.js';
import { terminate } from './server-process.js';
import type { Teardown } from './spawn.js';

export const PROMETHEUS = '/usr/bin/prometheus';

/** One sample of an instant query's result (a vector element, or a scalar as one unlabelled sample). */
export interface PromSample {
  readonly metric: Record<string, string>;
  /** The value as Prometheus prints it ("NaN", "+Inf" and "-Inf" included). */
  readonly value: string;
}

/** An instant query's answer: `error` set when Prometheus refused the query. */
export interface QueryResult {
  readonly status: 'success' | 'error';
  readonly error?: string;
  readonly samples: readonly PromSample[];
}

/** A running test Prometheus. */
export interface TestPrometheus {
  /** `http://127.0.0.1:PORT`. */
  readonly url: string;
  /** Evaluates `expr` at `time` (Unix seconds; now by default) through `/api/v1/query`. */
  query(expr: string, time?: number): Promise<QueryResult>;
  /** What the server logged so far (the tail), for failure messages. */
  log(): string;
  close(): Promise<void>;
}

export interface PrometheusOptions {
  /** `host:port` targets scraped as job `pilotfish`, every second. */
  readonly targets: readonly string[];
  /** Rule files (absolute paths) loaded and evaluated every second. */
  readonly ruleFiles?: readonly string[];
}

/** The configuration file: JSON is YAML, and needs no quoting rules of its own. */
function configText(options: PrometheusOptions): string {
  return JSON.stringify({
    global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
    rule_files: options.ruleFiles ?? [],
    scrape_configs: [{ job_name: 'pilotfish', static_configs: [{ targets: options.targets }] }],
  });
}

async function ready(url: string): Promise<boolean> {
  try {
    const res = await request(`${url}/-/ready`);
    await res.body.text();
    return res.statusCode === 200;
  } catch {
    return false;
  }
}

/** Starts Prometheus on a free port and resolves once `/-/ready` answers 200. */
export async function startPrometheus(t: Teardown, options: PrometheusOptions): Promise<TestPrometheus> {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-prometheus-'));
  const config = join(dir, 'prometheus.yml');
  await writeFile(config, configText(options));
  let child: ChildProcess | null = null;
  let output = '';
  const killOnExit = (): void => void child?.kill('SIGKILL');
  process.on('exit', killOnExit);
  const close = async (): Promise<void> => {
    await terminate(child);
    process.off('exit', killOnExit);
    await rm(dir, { recursive: true, force: true });
  };
  t.teardown(close);

  // The port is free when chosen; another process may take it before Prometheus binds: try again.
  for (let tries = 1; ; tries++) {
    const port = await freeTcpPort();
    const url = `http://127.0.0.1:${port}`;
    output = '';
    const proc = spawn(
      PROMETHEUS,
      [
        `--config.file=${config}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--storage.tsdb.retention.time=1h',
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child = proc;
    const keep = (chunk: Buffer): void => {
      output = (output + chunk.toString('utf8')).slice(-8000);
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    const deadline = performance.now() + 15_000;
    while (proc.exitCode === null && !(await ready(url))) {
      if (performance.now() > deadline) {
        await terminate(proc);
        throw new Error(`prometheus did not become ready: ${output}`);
      }
      await sleep(50);
    }
    if (proc.exitCode === null) {
      return {
        url,
        query: (expr, time) => query(url, expr, time),
        log: () => output,
        close,
      };
    }
    if (tries >= 3 || !/address already in use/.test(output)) throw new Error(`prometheus exited with ${proc.exitCode}: ${output}`);
  }
}

async function query(url: string, expr: string, time?: number): Promise<QueryResult> {
  const form = new URLSearchParams({ query: expr });
  if (time !== undefined) form.set('time', String(time));
  const res = await request(`${url}/api/v1/query`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: form.toString(),
  });
  const body = (await res.body.json()) as {
    status: 'success' | 'error';
    error?: string;
    data?: { resultType: string; result: unknown };
  };
  if (body.status !== 'success' || !body.data) return { status: 'error', error: body.error ?? `HTTP ${res.statusCode}`, samples: [] };
  const { resultType, result } = body.data;
  if (resultType === 'vector') {
    const vector = result as { metric: Record<string, string>; value: [number, string] }[];
    return { status: 'success', samples: vector.map((s) => ({ metric: s.metric, value: s.value[1] })) };
  }
  if (resultType === 'scalar') return { status: 'success', samples: [{ metric: {}, value: (result as [number, string])[1] }] };
  return { status: 'error', error: `unexpected result type ${resultType}`, samples: [] };
}
