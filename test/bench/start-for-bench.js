#!/usr/bin/env node
// Starts Pilotfish the way the peers benchmark (../shared/bench/run.sh) expects of "ours": it reads PORT
// and UPSTREAMS (comma-separated origin URLs) from the environment, writes a policy that listens on
// 127.0.0.1:$PORT and round-robins one catch-all route over UPSTREAMS, then runs the built CLI
// (dist/cmd/pilotfish.js) on it, forwarding signals and exiting with its code.
//
//   PORT=18090 UPSTREAMS=http://127.0.0.1:19001,http://127.0.0.1:19002 node test/bench/start-for-bench.js
//
// Options:
//   --dry-run       print the policy and exit
//   --write FILE    write the policy to FILE and exit (test/bench/pilotfish.sh then execs Pilotfish itself,
//                   so the harness measures Pilotfish's process alone, without this wrapper's RSS)
//   --otlp-sink     run a minimal OTLP/HTTP collector (answers 200, keeps nothing) for the tracing-* policies
// Environment:
//   BENCH_POLICY=basic|full   basic (default): the catch-all route with the built-in defaults.
//                             full: every mechanism on (rate limit, bulkhead, retries with budget, circuit
//                             breaker, outlier detection, health checks, hedging, fault injection), sized never
//                             to reject or trigger.
//                             h2c: basic with `protocol: h2c` on the upstream (test/bench/h2c.sh: origins that speak
//                             cleartext HTTP/2 with prior knowledge).
//                             local-limit / global-limit: basic plus a route rate limit that never rejects, in
//                             this sidecar (scope: local) or shared through Redis (scope: global, REDIS_ADDRESS).
//                             tracing-off / tracing-1 / tracing-100: basic, then basic plus OpenTelemetry tracing
//                             sampling 1% or 100% of requests, exported to TRACING_COLLECTOR (run a collector there,
//                             e.g. `node test/bench/start-for-bench.js --otlp-sink`): the cost of tracing, per request.
//   ADMIN_PORT                admin listener port [PORT + 1000]
//   TRACING_COLLECTOR         tracing-*: the OTLP/HTTP traces URL [http://127.0.0.1:4318/v1/traces]
//   TRACING_SINK              --otlp-sink: where the sink listens [127.0.0.1:4318]
//   REDIS_ADDRESS             global-limit: the Redis server [127.0.0.1:6379]
import { spawn } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const ENTRY = join(REPO, 'dist/cmd/pilotfish.js');

function fail(message) {
  process.stderr.write(`start-for-bench: ${message}\n`);
  process.exit(2);
}

function port(name, value) {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65535) fail(`${name} must be a port number, got ${JSON.stringify(value)}`);
  return n;
}

/** `http://127.0.0.1:19001` → `127.0.0.1:19001` (the policy's endpoint form). */
function endpoint(url) {
  let u;
  try {
    u = new URL(url);
  } catch {
    fail(`UPSTREAMS: not a URL: ${JSON.stringify(url)}`);
  }
  if (u.protocol !== 'http:') fail(`UPSTREAMS: only http:// origins are supported, got ${url}`);
  if ((u.pathname !== '/' && u.pathname !== '') || u.search) fail(`UPSTREAMS: origin URL expected (no path), got ${url}`);
  return `${u.hostname}:${u.port || '80'}`;
}

/** The policy text: plain YAML with only contract fields (see /work/shared/policy-contract.yaml). */
export function benchPolicy({ port: listenPort, adminPort, endpoints, mode, redis = '127.0.0.1:6379', collector = 'http://127.0.0.1:4318/v1/traces' }) {
  const list = endpoints.join(', ');
  if (mode === 'tracing-1' || mode === 'tracing-100') {
    // basic plus tracing: every request a root (wrk sends no traceparent), so the ratio alone decides.
    const ratio = mode === 'tracing-1' ? '1%' : '100%';
    return `${benchPolicy({ port: listenPort, adminPort, endpoints, mode: 'basic' }).replace('(basic): one catch-all route, built-in defaults.', `(${mode}): basic plus tracing at ${ratio}.`)}tracing:
  serviceName: pilotfish-bench
  otlp: { endpoint: ${collector} }
  sampling: { ratio: ${ratio} }
`;
  }
  if (mode === 'local-limit' || mode === 'global-limit') {
    // The same limit, high enough never to reject: the two figures compare where its bucket lives.
    const scope = mode === 'global-limit' ? 'global' : 'local';
    return `# Pilotfish bench policy (${mode}): basic plus a rate limit (scope: ${scope}) that never rejects.
version: 1
listeners:
  outbound: { address: 127.0.0.1:${listenPort} }
  admin: { address: 127.0.0.1:${adminPort} }
${scope === 'global' ? `redis: { address: ${redis}, timeout: 5ms, onFailure: open }\n` : ''}upstreams:
  bench:
    discovery: { static: [${list}] }
routes:
  - match: { pathPrefix: / }
    upstream: bench
    rateLimit: { rate: 10000000/s, burst: 100000, scope: ${scope} }
`;
  }
  if (mode === 'basic' || mode === 'h2c' || mode === 'tracing-off') {
    // h2c differs from basic in the upstream protocol alone, so the two figures compare the protocols.
    const what = mode === 'h2c' ? 'h2c: basic, the origins spoken to over cleartext HTTP/2' : 'basic';
    const protocol = mode === 'h2c' ? '\n    protocol: h2c' : '';
    return `# Pilotfish bench policy (${what}): one catch-all route, built-in defaults.
version: 1
listeners:
  outbound: { address: 127.0.0.1:${listenPort} }
  admin: { address: 127.0.0.1:${adminPort} }
upstreams:
  bench:
    discovery: { static: [${list}] }
    balancer: round-robin${protocol}
routes:
  - match: { pathPrefix: / }
    upstream: bench
`;
  }
  // Every mechanism on the request path, sized so that none of them rejects or trips on a healthy origin
  // under wrk -c64: the cost measured is the mechanisms' bookkeeping, not their refusals.
  return `# Pilotfish bench policy (full): every mechanism on, sized never to reject under the bench's load.
version: 1
listeners:
  outbound: { address: 127.0.0.1:${listenPort} }
  admin: { address: 127.0.0.1:${adminPort} }
defaults:
  timeout: 15s
  retry:
    attempts: 2
    perTryTimeout: 5s
    backoff: { base: 25ms, max: 250ms }
    on: [connect-failure, reset, timeout, 502, 503, 504]
    budget: { ratio: 20%, minPerSecond: 10 }
upstreams:
  bench:
    discovery: { static: [${list}] }
    balancer: round-robin
    connectTimeout: 1s
    bulkhead: { maxConcurrent: 1024, maxQueued: 1024, queueTimeout: 1s }
    circuitBreaker:
      consecutiveFailures: 5
      failureRate: { threshold: 50%, minRequests: 20, window: 10s }
      openFor: 5s
      maxOpenFor: 60s
      halfOpenProbes: 1
    outlierDetection: { consecutiveFailures: 5, ejectFor: 30s, maxEjectedPercent: 50 }
    healthCheck: { path: /healthz, interval: 5s, timeout: 1s, unhealthyAfter: 3, healthyAfter: 2 }
routes:
  - match: { pathPrefix: / }
    upstream: bench
    rateLimit: { rate: 10000000/s, burst: 1000000 }
    # Configured but never triggering on a healthy origin: a hedge after 1 s, fault injection by header only.
    hedge: { after: 1s, maxExtra: 10% }
    fault: { abort: { percent: 0, status: 503 }, header: x-pilotfish-fault }
`;
}

function policyFromEnv(env) {
  const listenPort = port('PORT', env.PORT);
  const adminPort = env.ADMIN_PORT ? port('ADMIN_PORT', env.ADMIN_PORT) : listenPort + 1000;
  if (adminPort === listenPort) fail('ADMIN_PORT must differ from PORT');
  const urls = (env.UPSTREAMS ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  if (urls.length === 0) fail('UPSTREAMS is required (comma-separated http://host:port origins)');
  const mode = env.BENCH_POLICY || 'basic';
  if (!['basic', 'full', 'h2c', 'local-limit', 'global-limit', 'tracing-off', 'tracing-1', 'tracing-100'].includes(mode)) {
    fail(`BENCH_POLICY must be basic, full, h2c, local-limit or global-limit (or tracing-off, tracing-1, tracing-100), got ${JSON.stringify(mode)}`);
  }
  return benchPolicy({
    port: listenPort,
    adminPort,
    endpoints: urls.map(endpoint),
    mode: mode === 'tracing-off' ? 'basic' : mode,
    redis: env.REDIS_ADDRESS || undefined,
    collector: env.TRACING_COLLECTOR || undefined,
  });
}

/**
 * `--otlp-sink`: the collector for the tracing-* policies, as cheap as one can be (answers 200, keeps
 * nothing), so the figure is the proxy's cost and not a collector's. Prints spans and bytes received on exit.
 */
function otlpSink(env) {
  const [host, portText] = (env.TRACING_SINK || '127.0.0.1:4318').split(':');
  let requests = 0;
  let bytes = 0;
  let spans = 0;
  const server = http.createServer((req, res) => {
    requests++;
    req.on('data', (chunk) => {
      bytes += chunk.length;
      // Each span carries one "spanId" (a try's parent is "parentSpanId"): a count without parsing.
      for (let i = chunk.indexOf('"spanId"'); i >= 0; i = chunk.indexOf('"spanId"', i + 1)) spans++;
    });
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
  });
  server.listen(port('TRACING_SINK', portText), host, () => process.stderr.write(`otlp sink on http://${host}:${portText}/v1/traces\n`));
  const stop = () => {
    process.stderr.write(`otlp sink: ${requests} exports, ${spans} spans, ${bytes} bytes\n`);
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

function main(argv) {
  if (argv[0] === '--otlp-sink') return otlpSink(process.env);
  const text = policyFromEnv(process.env);
  if (argv[0] === '--dry-run') {
    process.stdout.write(text);
    return;
  }
  if (argv[0] === '--write') {
    if (!argv[1]) fail('--write needs a FILE');
    writeFileSync(argv[1], text);
    return;
  }
  if (argv.length > 0) fail(`unknown arguments: ${argv.join(' ')} (use --dry-run or --write FILE)`);

  const dir = mkdtempSync(join(tmpdir(), 'pilotfish-bench-'));
  const file = join(dir, 'policy.yaml');
  writeFileSync(file, text);
  const cleanup = () => rmSync(dir, { recursive: true, force: true });

  const child = spawn(process.execPath, [ENTRY, 'run', '--policy', file], { stdio: 'inherit', cwd: REPO });
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
    process.on(sig, () => {
      if (child.exitCode === null && child.signalCode === null) child.kill(sig);
    });
  }
  child.on('error', (err) => {
    cleanup();
    fail(`cannot start ${ENTRY}: ${err.message}`);
  });
  child.on('exit', (code, signal) => {
    cleanup();
    if (signal) {
      // Die the way the child did, so the caller sees the same status (128 + signal number).
      process.removeAllListeners(signal);
      process.kill(process.pid, signal);
      return;
    }
    process.exit(code ?? 1);
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main(process.argv.slice(2));
