// The container packaging, checked without a Docker engine: the Dockerfile's stages are modelled (see
// dockerfile.ts) and every file the runtime image needs is traced back to the repository or to the build
// (`npm test` builds before tap runs, so dist/ exists), and the examples under examples/ are checked
// against the image: the policy path it runs, the admin port its health check and probes use, the
// outbound address the app's HTTP_PROXY names, and each example policy is loaded for real.
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, posix, resolve } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { loadPolicy } from '../../lib/policy/load.js';
import { REPO } from '../support/repo.js';
import { ignored, origin, stages, type Stage } from './dockerfile.js';


const read = (rel: string): string => readFileSync(join(REPO, rel), 'utf8');

// ---------------------------------------------------------------- reading YAML without `any`
type Obj = Record<string, unknown>;
function obj(v: unknown, what: string): Obj {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${what}: expected a mapping`);
  return v as Obj;
}
function list(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) throw new Error(`${what}: expected a list`);
  return v;
}
function str(v: unknown, what: string): string {
  if (typeof v !== 'string') throw new Error(`${what}: expected a string, got ${JSON.stringify(v)}`);
  return v;
}

interface Address {
  readonly host: string;
  readonly port: number;
}
function address(v: unknown, what: string): Address {
  const s = str(v, what);
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(s.slice(i + 1)) };
}

// ---------------------------------------------------------------- the Dockerfile
const all = stages(read('Dockerfile'));
const runtime = all[all.length - 1] as Stage;
const build = all.find((s) => s.name === 'build');
const entrypoint = runtime.entrypoint ?? [];
/** The node flags Pilotfish ships with, as test/bench/node-flags.sh (sourced by every bench script) lists them. */
const SHIPPED_NODE_FLAGS = /^PILOTFISH_NODE_FLAGS=\((.*)\)$/m.exec(readFileSync(join(REPO, 'test/bench/node-flags.sh'), 'utf8'))?.[1]?.split(/\s+/) ?? ['(none found)'];
const cmd = runtime.cmd ?? [];
/** Where the image expects the policy: the argument after `--policy` in CMD. */
const POLICY_PATH = cmd[cmd.indexOf('--policy') + 1] ?? '';
const healthUrl = new URL(/https?:\/\/[^'"`\s)]+/.exec((runtime.healthcheck ?? []).join(' '))?.[0] ?? 'http://invalid/');
const ADMIN_PORT = Number(healthUrl.port);

t.test('the Dockerfile model traces files through stages and tells a missing one', async (t) => {
  const model = stages([
    'ARG IMG=node:20',
    'FROM ${IMG} AS build',
    'WORKDIR /src',
    '# a comment',
    'COPY package.json a.txt ./',
    'COPY lib ./lib',
    'RUN npm ci && \\',
    '    npm run build',
    'FROM ${IMG}',
    'WORKDIR /app',
    'COPY --from=build /src/dist ./dist',
    'COPY --from=build /src/lib/x.js ./x.js',
    'COPY --from=build /src/nothing ./n',
    'USER node',
  ].join('\n'));
  const [b, r] = model as [Stage, Stage];
  t.same(model.map((s) => s.image), ['node:20', 'node:20'], 'global ARG defaults substitute into FROM');
  t.same(b.runs, ['npm ci && npm run build'], 'continuation lines are joined');
  t.same(origin(model, r, '/app/dist/cmd/a.js'), { kind: 'built', path: 'dist/cmd/a.js', by: 'npm run build' });
  t.same(origin(model, r, '/app/x.js'), { kind: 'context', path: 'lib/x.js' }, 'a file of a copied folder');
  t.same(origin(model, b, '/src/a.txt'), { kind: 'context', path: 'a.txt' }, 'one of several sources copied into ./');
  t.equal(origin(model, r, '/app/n'), null, 'nothing in the build stage provides /src/nothing');
  t.equal(origin(model, r, '/app/other'), null, 'nothing copies /app/other');
  t.equal(r.user, 'node');
  const rules = ['node_modules', '**/*.log', 'dist', '!dist/keep'];
  t.ok(ignored(rules, 'node_modules/x/y.js'), 'a folder pattern excludes what is inside');
  t.ok(ignored(rules, 'a/b/c.log'), '** spans folders');
  t.notOk(ignored(rules, 'lib/x.ts'), 'unmatched paths are kept');
  t.notOk(ignored(rules, 'dist/keep'), 'a later ! pattern re-includes');
});

t.test('the Dockerfile builds on the supported LTS the suite also runs on, and runs in a fresh stage', async (t) => {
  // The one LTS version the tests install beside the machine's Node: the image must ship that major.
  const lts = /^NODE_LTS_VERSION=(\d+)\./m.exec(read('test/support/install/70-node-lts.sh'))?.[1];
  t.ok(lts, 'test/support/install/70-node-lts.sh names the LTS version');
  const image = `node:${lts}-bookworm-slim`;
  t.equal(all.length, 2, 'two stages: build and runtime');
  t.ok(build, 'a stage named "build"');
  for (const s of all) t.equal(s.image, image, `stage ${s.name ?? s.index} is FROM ${image}`);
  const engines = (JSON.parse(read('package.json')) as { engines: { node: string } }).engines.node;
  t.match(engines, new RegExp(`\\^${lts}\\.`), `package.json engines (${engines}) admits Node ${lts}`);
  const runs = build?.runs.join('\n') ?? '';
  t.match(runs, /\bnpm ci\b/, 'the build installs from the lockfile (npm ci)');
  t.match(runs, /\bnpm run build\b/, 'the build compiles with npm run build');
  t.match(runs, /\bnpm prune --omit=dev\b/, 'the build drops dev dependencies before the runtime copies node_modules');
  t.same(runtime.runs, [], 'the runtime stage runs nothing: it only copies built files');
});

t.test('every COPY source exists in the repository or is made by the build stage', async (t) => {
  const ignore = read('.dockerignore').split(/\r?\n/);
  for (const s of all) {
    for (const c of s.copies) {
      for (const src of c.srcs) {
        const at = `line ${c.line}: COPY ${c.from ? `--from=${c.from} ` : ''}${src}`;
        if (c.from === null) {
          t.ok(existsSync(join(REPO, src)), `${at}: ${src} exists in the repository`);
          t.notOk(ignored(ignore, src.replace(/^\.\//, '')), `${at}: ${src} is not excluded by .dockerignore`);
          continue;
        }
        const from = all.find((x) => x.name === c.from);
        t.ok(from, `${at}: stage ${c.from} exists`);
        if (!from) continue;
        const o = origin(all, from, posix.resolve('/', src));
        t.ok(o, `${at}: stage ${c.from} has ${src} (copied in or made by a RUN step)`);
        if (o) t.ok(existsSync(join(REPO, o.path)), `${at}: its source ${o.path} exists here${o.kind === 'built' ? ` (made by ${o.by})` : ''}`);
      }
    }
  }
  // The host's installs and builds must not leak into the image: it is built from sources and the lockfile.
  for (const p of ['node_modules', 'dist', '.git']) t.ok(ignored(ignore, p), `.dockerignore excludes ${p}`);
});

t.test('the image runs the built CLI on the mounted policy', async (t) => {
  t.same(entrypoint, ['node', ...SHIPPED_NODE_FLAGS, 'dist/cmd/pilotfish.js'], 'ENTRYPOINT (exec form, so node gets the signals) runs the CLI with the node flags the benches measure');
  const entryFile = posix.resolve(runtime.workdir, entrypoint.at(-1) ?? '');
  const o = origin(all, runtime, entryFile);
  t.ok(o, `${entryFile} is in the runtime image`);
  if (o) {
    t.equal(o.path, 'dist/cmd/pilotfish.js', 'it is the build output of cmd/pilotfish.ts');
    t.ok(existsSync(join(REPO, o.path)), `${o.path} exists after the build (run npm run build first; npm test does)`);
  }
  t.ok(origin(all, runtime, posix.resolve(runtime.workdir, 'package.json')), 'package.json (type: module) is in the image');
  t.ok(origin(all, runtime, posix.resolve(runtime.workdir, 'node_modules/yaml/package.json')), 'production dependencies are in the image');
  const dflt = origin(all, runtime, posix.resolve(runtime.workdir, 'config/pilotfish.yaml'));
  t.ok(dflt && existsSync(join(REPO, dflt.path)), 'the CLI default policy config/pilotfish.yaml ships in the image');
  t.same(cmd.slice(0, 2), ['run', '--policy'], 'CMD is `run --policy FILE`');
  t.equal(POLICY_PATH, '/etc/pilotfish/pilotfish.yaml', 'the policy is read from /etc/pilotfish/pilotfish.yaml');
});

t.test('the runtime is unprivileged, exposes both listeners and stops on SIGTERM', async (t) => {
  const user = runtime.user ?? 'root';
  t.notOk(/^(root|0)(:|$)/.test(user), `USER ${user} is not root`);
  t.equal(user, 'node', 'the node image user (uid 1000)');
  t.same([...runtime.expose].sort(), [15000, 15001, 15006], 'EXPOSE 15000 (admin) 15001 (outbound) 15006 (inbound, mTLS from other sidecars)');
  t.equal(runtime.stopsignal, 'SIGTERM', 'STOPSIGNAL SIGTERM: Pilotfish drains on it');
});

/** Exit code of a command (never rejects). */
function exitCode(file: string, args: readonly string[]): Promise<number> {
  return new Promise((done) => {
    execFile(file, args, { timeout: 20_000 }, (err) => {
      done(err ? (typeof err.code === 'number' ? err.code : -1) : 0);
    });
  });
}
function listen(server: Server): Promise<number> {
  return new Promise((done) => server.listen(0, '127.0.0.1', () => done((server.address() as AddressInfo).port)));
}

t.test('the HEALTHCHECK asks /healthz on the admin port and passes only on a 2xx', async (t) => {
  const hc = runtime.healthcheck ?? [];
  t.equal(hc[0], 'node', 'runs node (the slim image has no curl)');
  t.equal(healthUrl.hostname, '127.0.0.1', 'on loopback, inside the container');
  t.equal(healthUrl.pathname, '/healthz', 'the liveness endpoint');
  t.equal(ADMIN_PORT, 15000, 'the default admin port');

  // Run the one-liner itself against a stand-in admin server: it must be valid JS with the right exits.
  let status = 200;
  const server = createServer((req, res) => {
    res.statusCode = req.url === '/healthz' ? status : 404;
    res.end();
  });
  const port = await listen(server);
  t.teardown(() => server.close());
  const args = hc.slice(1).map((a) => a.replace(healthUrl.origin, `http://127.0.0.1:${port}`));
  t.equal(await exitCode(process.execPath, args), 0, 'exit 0 when /healthz answers 200');
  status = 503;
  t.equal(await exitCode(process.execPath, args), 1, 'exit 1 when /healthz answers 503');
  const closed = createServer();
  const closedPort = await listen(closed);
  await new Promise((done) => closed.close(done));
  const refused = hc.slice(1).map((a) => a.replace(healthUrl.origin, `http://127.0.0.1:${closedPort}`));
  t.equal(await exitCode(process.execPath, refused), 1, 'exit 1 when nothing listens');
});

// ---------------------------------------------------------------- the example policies
/** Checks a policy meant to run in a container; returns its listeners. */
function containerPolicy(t: Test, text: string, where: string): { admin: Address; outbound: Address } {
  const doc = obj(parse(text), where);
  t.equal(doc.version, 1, `${where}: version 1`);
  const listeners = obj(doc.listeners, `${where}: listeners`);
  const admin = address(obj(listeners.admin, 'admin').address, `${where}: listeners.admin.address`);
  const outbound = address(obj(listeners.outbound, 'outbound').address, `${where}: listeners.outbound.address`);
  t.ok(['0.0.0.0', '::'].includes(admin.host), `${where}: admin listens on all interfaces (probes come from outside)`);
  t.equal(admin.port, ADMIN_PORT, `${where}: admin port is the one the image's HEALTHCHECK asks`);
  t.ok(['127.0.0.1', '::1', 'localhost'].includes(outbound.host), `${where}: outbound listens on loopback only`);
  t.ok(runtime.expose.includes(outbound.port), `${where}: outbound port ${outbound.port} is EXPOSEd`);
  return { admin, outbound };
}

async function loads(t: Test, file: string, where: string): Promise<void> {
  const result = await loadPolicy(file);
  t.ok(result.ok, `${where} passes full validation`, { issues: result.ok ? [] : result.issues });
  // The admin port faces the pod network for probes and scrapes; /admin/* must not.
  if (result.ok) {
    t.same(result.policy.listeners.admin.adminFrom.map((c) => c.text), ['127.0.0.0/8', '::1/128'], `${where}: /admin/* answers loopback only`);
  }
}

/** HTTP_PROXY from a Compose `environment` (mapping or list) or a Kubernetes `env` list. */
function httpProxy(env: unknown): string | undefined {
  if (Array.isArray(env)) {
    for (const e of env) {
      if (typeof e === 'string' && e.startsWith('HTTP_PROXY=')) return e.slice('HTTP_PROXY='.length);
      if (e !== null && typeof e === 'object' && (e as Obj).name === 'HTTP_PROXY') return String((e as Obj).value);
    }
    return undefined;
  }
  const v = env !== null && typeof env === 'object' ? (env as Obj).HTTP_PROXY : undefined;
  return typeof v === 'string' ? v : undefined;
}

t.test('the Compose example runs the sidecar in the app network namespace on the mounted policy', async (t) => {
  const dir = join(REPO, 'examples/docker-compose');
  const services = obj(obj(parse(readFileSync(join(dir, 'docker-compose.yaml'), 'utf8')), 'compose').services, 'services');
  const entry = Object.entries(services).find(([, s]) => String(obj(s, 'service').image ?? '').startsWith('pilotfish'));
  if (!entry) throw new Error('no service runs a pilotfish image');
  const [name, svc] = [entry[0], obj(entry[1], entry[0])];
  const buildCtx = obj(svc.build, `${name}.build`);
  t.equal(resolve(dir, str(buildCtx.context, 'build.context')), REPO, 'builds the repository Dockerfile');
  t.equal(buildCtx.dockerfile ?? 'Dockerfile', 'Dockerfile', 'with the Dockerfile at its root');

  const appName = /^service:(.+)$/.exec(str(svc.network_mode, `${name}.network_mode`))?.[1] ?? '';
  t.ok(services[appName], `network_mode names the app service (${appName})`);
  const app = obj(services[appName], appName);

  let policyFile: string | null = null;
  for (const v of list(svc.volumes, `${name}.volumes`)) {
    const [source, target] = typeof v === 'string' ? v.split(':') : [str(obj(v, 'volume').source, 'source'), str(obj(v, 'volume').target, 'target')];
    if (target === POLICY_PATH) policyFile = resolve(dir, source ?? '');
    if (target === posix.dirname(POLICY_PATH)) policyFile = resolve(dir, source ?? '', posix.basename(POLICY_PATH));
  }
  t.ok(policyFile, `a volume puts the policy at ${POLICY_PATH}`);
  if (!policyFile) return;
  t.ok(existsSync(policyFile), `the mounted policy ${policyFile} exists`);
  const { admin, outbound } = containerPolicy(t, readFileSync(policyFile, 'utf8'), 'compose policy');

  t.equal(httpProxy(app.environment), `http://${outbound.host}:${outbound.port}`, "the app's HTTP_PROXY is the outbound listener");
  const published = list(app.ports ?? [], `${appName}.ports`).map((p) => Number(String(p).split(':').pop()?.split('/')[0]));
  t.ok(published.includes(admin.port), 'the admin port is published on the app service (the sidecar shares its namespace)');
  t.ok(Object.keys(services).length >= 4, 'the app, the sidecar and two upstreams');
  await loads(t, policyFile, 'examples/docker-compose policy');
});

t.test('the Kubernetes example: policy ConfigMap, probes and scrape annotations on the admin listener', async (t) => {
  const file = join(REPO, 'examples/kubernetes/pilotfish-sidecar.yaml');
  const parsed = parseAllDocuments(readFileSync(file, 'utf8'));
  const docs = (Array.isArray(parsed) ? parsed : [parsed]).map((d, i) => {
    t.same(d.errors.map(String), [], `document ${i} is valid YAML`);
    return obj(d.toJS(), `document ${i}`);
  });

  const pods = docs.filter((d) => d.kind === 'Deployment').map((d) => obj(obj(obj(d.spec, 'spec').template, 'template'), 'template'));
  const withSidecar = pods.find((p) => {
    const spec = obj(p.spec, 'pod spec');
    return [...list(spec.initContainers ?? [], 'initContainers'), ...list(spec.containers, 'containers')]
      .some((c) => String(obj(c, 'container').image).startsWith('pilotfish'));
  });
  if (!withSidecar) throw new Error('no Deployment runs a pilotfish container');
  const spec = obj(withSidecar.spec, 'pod spec');
  const inits = list(spec.initContainers ?? [], 'initContainers').map((c) => obj(c, 'container'));
  const mains = list(spec.containers, 'containers').map((c) => obj(c, 'container'));
  const pf = [...inits, ...mains].find((c) => String(c.image).startsWith('pilotfish')) as Obj;
  if (inits.includes(pf)) t.equal(pf.restartPolicy, 'Always', 'as an init container it is a native sidecar (restartPolicy: Always)');
  if (pf.command !== undefined) t.fail('the sidecar keeps the image ENTRYPOINT (no command:)');
  if (pf.args !== undefined) t.same(pf.args, cmd, 'its args are the image CMD');

  // The policy: ConfigMap → volume → mount at the directory of the path the image reads.
  const mount = list(pf.volumeMounts, 'volumeMounts').map((m) => obj(m, 'volumeMount'))
    .find((m) => m.mountPath === posix.dirname(POLICY_PATH));
  t.ok(mount, `the policy volume is mounted at ${posix.dirname(POLICY_PATH)}`);
  if (!mount) return;
  t.equal(mount.subPath, undefined, 'as a directory, not a subPath (a subPath mount never sees ConfigMap updates)');
  const volume = list(spec.volumes, 'volumes').map((v) => obj(v, 'volume')).find((v) => v.name === mount.name);
  const cmRef = obj(obj(volume, 'policy volume').configMap, 'policy volume configMap');
  const items = list(cmRef.items ?? [], 'items').map((i) => obj(i, 'item'));
  const key = items.length ? str(items.find((i) => i.path === posix.basename(POLICY_PATH))?.key, 'item key') : posix.basename(POLICY_PATH);
  const cm = docs.find((d) => d.kind === 'ConfigMap' && obj(d.metadata, 'metadata').name === cmRef.name);
  const text = str(obj(obj(cm, 'ConfigMap').data, 'ConfigMap data')[key], `ConfigMap key ${key}`);
  const { admin, outbound } = containerPolicy(t, text, 'kubernetes policy');

  // Probes and scraping all reach the policy's admin listener.
  const ports = new Map(list(pf.ports ?? [], 'ports').map((p) => [obj(p, 'port').name, obj(p, 'port').containerPort]));
  const probe = (name: string): { path: unknown; port: unknown } => {
    const get = obj(obj(pf[name], name).httpGet, `${name}.httpGet`);
    return { path: get.path, port: typeof get.port === 'string' ? ports.get(get.port) : get.port };
  };
  t.same(probe('readinessProbe'), { path: '/readyz', port: admin.port }, 'readiness: /readyz on the admin port');
  t.same(probe('livenessProbe'), { path: '/healthz', port: admin.port }, 'liveness: /healthz on the admin port');
  const annotations = obj(obj(withSidecar.metadata, 'template metadata').annotations, 'annotations');
  t.equal(annotations['prometheus.io/scrape'], 'true', 'prometheus.io/scrape: "true"');
  t.equal(annotations['prometheus.io/port'], String(admin.port), 'prometheus.io/port is the admin port');
  t.equal(annotations['prometheus.io/path'], '/metrics', 'prometheus.io/path: /metrics');

  const apps = mains.filter((c) => c !== pf);
  t.ok(apps.length > 0, 'an app container beside the sidecar');
  for (const c of apps) t.equal(httpProxy(c.env), `http://${outbound.host}:${outbound.port}`, `${String(c.name)}: HTTP_PROXY is the outbound listener`);

  // Non-root with a read-only root filesystem, for the sidecar and the app alike.
  const podSec = obj(spec.securityContext ?? {}, 'pod securityContext');
  for (const c of [pf, ...apps]) {
    const sec = obj(c.securityContext, `${String(c.name)}.securityContext`);
    t.ok((sec.runAsNonRoot ?? podSec.runAsNonRoot) === true, `${String(c.name)}: runAsNonRoot`);
    const uid = sec.runAsUser ?? podSec.runAsUser;
    t.ok(typeof uid === 'number' && uid > 0, `${String(c.name)}: a numeric non-zero runAsUser (runAsNonRoot cannot check USER node by name)`);
    t.equal(sec.readOnlyRootFilesystem, true, `${String(c.name)}: readOnlyRootFilesystem`);
    t.equal(sec.allowPrivilegeEscalation, false, `${String(c.name)}: no privilege escalation`);
  }
  t.equal(obj(pf.securityContext, 'sidecar securityContext').runAsUser, 1000, 'the sidecar runs as uid 1000, the image user node');

  const dir = t.testdir({ 'pilotfish.yaml': text });
  await loads(t, join(dir, 'pilotfish.yaml'), 'examples/kubernetes policy (ConfigMap)');
});
