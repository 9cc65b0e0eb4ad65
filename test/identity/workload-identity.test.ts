/**
 * The workload identity: loading and validating real certificates (made by `pilotfish certs` with
 * openssl), rotation by refresh() and by the poller (plain files and a Kubernetes-style `..data`
 * symlink swap), half-written rotations, and close(). Time is a ManualClock whose wall clock starts
 * at the real time, since the certificates are dated by the real clock.
 */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import tls from 'node:tls';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { issueCertificates, issueWorkload } from '../../cmd/certs.js';
import { ManualClock } from '../../lib/core/clock.js';
import { spiffeIdOfSubjectAltName } from '../../lib/identity/spiffe.js';
import {
  IdentityLoadError,
  WorkloadIdentity,
  type IdentityFiles,
  type IdentityMaterial,
} from '../../lib/identity/workload-identity.js';
import type { Level, Logger } from '../../lib/observe/logger.js';

const run = promisify(execFile);
const DAY_MS = 86_400_000;
const API_ID = 'spiffe://mesh.local/ns/orders/sa/api';

// One set of certificates for the whole file: openssl is the slow part.
const root = await mkdtemp(join(tmpdir(), 'pilotfish-identity-'));
t.teardown(() => rm(root, { recursive: true, force: true }));
const [mesh, foreign] = await Promise.all([
  issueCertificates(join(root, 'mesh'), {
    workloads: [
      { name: 'api', spiffeId: API_ID },
      { name: 'api2', spiffeId: API_ID },
      { name: 'web', spiffeId: 'spiffe://mesh.local/ns/shop/sa/web' },
      { name: 'expired', spiffeId: API_ID, expired: true },
      { name: 'other-td', spiffeId: 'spiffe://other.local/ns/orders/sa/api' },
      { name: 'no-uri', spiffeId: '', subjectAltNames: ['DNS:api.orders.svc'] },
      { name: 'two-uris', spiffeId: '', subjectAltNames: [`URI:${API_ID}`, 'URI:spiffe://mesh.local/ns/orders/sa/admin'] },
      { name: 'bad-uri', spiffeId: 'spiffe://mesh.local/ns/../sa/api' },
    ],
  }),
  issueCertificates(join(root, 'foreign'), { workloads: [{ name: 'api', spiffeId: API_ID }] }),
]);
const w = (name: string) => mesh.workloads[name]!;

/** A logger that remembers what it was told. */
function recordingLogger(): Logger & { lines: { level: Level; msg: string; fields?: Record<string, unknown> }[] } {
  const lines: { level: Level; msg: string; fields?: Record<string, unknown> }[] = [];
  return { lines, log: (level, msg, fields) => void lines.push({ level, msg, fields }) };
}

/** Polls `check` until truthy; fails after `timeoutMs` (waits for file I/O, never for a policy). */
async function until<T>(what: string, check: () => T, timeoutMs = 3000): Promise<NonNullable<T>> {
  for (let waited = 0; ; waited += 5) {
    const value = check();
    if (value) return value as NonNullable<T>;
    if (waited > timeoutMs) throw new Error(`timed out waiting for: ${what}`);
    await sleep(5);
  }
}

/** Copies `from` over `to` atomically, as a secret manager would. */
async function install(from: string, to: string): Promise<void> {
  await copyFile(from, `${to}.tmp`);
  await rename(`${to}.tmp`, to);
}

interface Setup {
  files: IdentityFiles;
  clock: ManualClock;
  logger: ReturnType<typeof recordingLogger>;
  dir: string;
}

/** A directory holding cert.pem, key.pem and bundle.pem copied from the given files. */
async function setup(t: Test, from: { cert: string; key: string; bundle?: string }, clock = new ManualClock(0, Date.now())): Promise<Setup> {
  const dir = await mkdtemp(join(root, 'id-'));
  const files: IdentityFiles = {
    trustDomain: 'mesh.local',
    certFile: join(dir, 'cert.pem'),
    keyFile: join(dir, 'key.pem'),
    trustBundleFile: join(dir, 'bundle.pem'),
    refreshMs: 1000,
  };
  await install(from.cert, files.certFile);
  await install(from.key, files.keyFile);
  await install(from.bundle ?? mesh.caCert, files.trustBundleFile);
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return { files, clock, logger: recordingLogger(), dir };
}

async function load(t: Test, s: Setup): Promise<WorkloadIdentity> {
  const identity = await WorkloadIdentity.load(s.files, { clock: s.clock, logger: s.logger });
  t.teardown(() => identity.close());
  return identity;
}

/** Records what the identity reports. */
function watch(identity: WorkloadIdentity) {
  const rotated: IdentityMaterial[] = [];
  const failed: IdentityLoadError[] = [];
  identity.onRotate((m) => rotated.push(m));
  identity.onRotateFailed((e) => failed.push(e));
  return { rotated, failed };
}

async function validTo(file: string): Promise<number> {
  return Date.parse(new X509Certificate(await readFile(file)).validTo);
}

t.test('a good identity loads with its SPIFFE ID, expiries and a client context that handshakes', async (t) => {
  const bundle = join(root, 'two-cas.pem');
  await writeFile(bundle, (await readFile(mesh.caCert, 'utf8')) + (await readFile(foreign.caCert, 'utf8')));
  const s = await setup(t, { ...w('api'), bundle });
  const identity = await load(t, s);
  const m = identity.material;
  t.equal(m.spiffeId, API_ID);
  t.equal(m.notAfterMs, await validTo(w('api').cert), 'notAfterMs is the leaf expiry');
  t.equal(m.bundleNotAfterMs, Math.min(await validTo(mesh.caCert), await validTo(foreign.caCert)), 'the earliest CA expiry');
  t.equal(m.certPem, await readFile(w('api').cert, 'utf8'));
  t.equal(m.keyPem, await readFile(w('api').key, 'utf8'));
  t.equal(m.bundlePem, await readFile(bundle, 'utf8'));
  t.match(m.fingerprint, /^[0-9a-f]{64}$/);
  t.ok(Object.isFrozen(m), 'material is immutable');
  t.match(s.logger.lines, [{ level: 'info', msg: 'workload identity loaded', fields: { spiffeId: API_ID } }]);

  // The client context is what outbound mTLS uses: a real handshake with a server that requires it.
  const server = tls.createServer(
    { cert: await readFile(w('web').cert), key: await readFile(w('web').key), ca: await readFile(mesh.caCert), requestCert: true, rejectUnauthorized: true },
    (socket) => socket.end(String(spiffeIdOfSubjectAltName(socket.getPeerCertificate().subjectaltname))),
  );
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  t.teardown(() => new Promise((done) => server.close(done)));
  const port = (server.address() as { port: number }).port;
  let serverId: string | null = null;
  const heard = await new Promise<string>((done, fail) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      secureContext: m.clientContext,
      // Peers are named by SPIFFE ID, not host name.
      checkServerIdentity: (_host, cert) => {
        serverId = spiffeIdOfSubjectAltName(cert.subjectaltname);
        return serverId === 'spiffe://mesh.local/ns/shop/sa/web' ? undefined : new Error(`unexpected server ${serverId}`);
      },
    });
    let text = '';
    socket.on('data', (d: Buffer) => (text += d.toString()));
    socket.on('end', () => done(text));
    socket.on('error', fail);
  });
  t.equal(heard, API_ID, 'the server saw our SPIFFE ID');
  t.equal(serverId, 'spiffe://mesh.local/ns/shop/sa/web', 'and we saw its');
});

t.test('each validation failure is an IdentityLoadError naming the file at fault', async (t) => {
  const past = new ManualClock(0, Date.now() - 10 * DAY_MS);
  const future = new ManualClock(0, Date.now() + 200 * DAY_MS);
  const corrupt = join(root, 'corrupt.pem');
  const good = await readFile(w('api').cert, 'utf8');
  await writeFile(corrupt, good.replace(/\n[A-Za-z0-9+/]{20}/, '\n!!!!!!!!!!!!!!!!!!!!'));
  const garbage = join(root, 'garbage.pem');
  await writeFile(garbage, 'not a pem file\n');
  const empty = join(root, 'empty.pem');
  await writeFile(empty, '');

  type Case = { what: string; from: { cert: string; key: string; bundle?: string }; clock?: ManualClock; fault: 'certFile' | 'keyFile' | 'trustBundleFile'; problem: RegExp; remove?: 'cert.pem' | 'key.pem' | 'bundle.pem' };
  const cases: Case[] = [
    { what: 'missing certificate', from: w('api'), remove: 'cert.pem', fault: 'certFile', problem: /cannot read the certificate file: ENOENT/ },
    { what: 'missing key', from: w('api'), remove: 'key.pem', fault: 'keyFile', problem: /cannot read the private key file: ENOENT/ },
    { what: 'missing bundle', from: w('api'), remove: 'bundle.pem', fault: 'trustBundleFile', problem: /cannot read the trust bundle file: ENOENT/ },
    { what: 'certificate not PEM', from: { ...w('api'), cert: garbage }, fault: 'certFile', problem: /no PEM certificate found/ },
    { what: 'certificate empty (mid-write)', from: { ...w('api'), cert: empty }, fault: 'certFile', problem: /no PEM certificate found/ },
    { what: 'certificate corrupt', from: { ...w('api'), cert: corrupt }, fault: 'certFile', problem: /certificate 1 does not parse/ },
    { what: 'key not PEM', from: { ...w('api'), key: garbage }, fault: 'keyFile', problem: /not a usable PEM private key/ },
    { what: 'bundle not PEM', from: { ...w('api'), bundle: garbage }, fault: 'trustBundleFile', problem: /no PEM certificate found/ },
    { what: 'key of another workload', from: { ...w('api'), key: w('web').key }, fault: 'keyFile', problem: /private key does not match the certificate in .*cert\.pem/ },
    { what: 'no URI SAN', from: w('no-uri'), fault: 'certFile', problem: /no URI subject alternative name/ },
    { what: 'two URI SANs', from: w('two-uris'), fault: 'certFile', problem: /has 2 URI subject alternative names; an X\.509-SVID has exactly one/ },
    { what: 'invalid SPIFFE ID', from: w('bad-uri'), fault: 'certFile', problem: /is not a SPIFFE ID: the path must not have a "\.\." segment/ },
    { what: 'another trust domain', from: w('other-td'), fault: 'certFile', problem: /SPIFFE ID spiffe:\/\/other\.local\/ns\/orders\/sa\/api is not in trust domain mesh\.local/ },
    { what: 'signed by a CA not in the bundle', from: foreign.workloads.api!, fault: 'certFile', problem: /is not issued and signed by a CA in .*bundle\.pem/ },
    { what: 'a CA in place of the leaf', from: { cert: mesh.caCert, key: mesh.caKey }, fault: 'certFile', problem: /is a CA/ },
    { what: 'expired certificate', from: w('expired'), fault: 'certFile', problem: /expired at \d{4}-/ },
    { what: 'expired by the clock', from: w('api'), clock: future, fault: 'certFile', problem: /the certificate for spiffe:\/\/mesh\.local\/ns\/orders\/sa\/api expired at/ },
    { what: 'not yet valid by the clock', from: w('api'), clock: past, fault: 'certFile', problem: /is not valid before/ },
  ];
  for (const c of cases) {
    const s = await setup(t, c.from, c.clock);
    if (c.remove) await rm(join(s.dir, c.remove));
    const err = await WorkloadIdentity.load(s.files, { clock: s.clock, logger: s.logger }).then(
      (identity) => {
        identity.close();
        return null;
      },
      (e: unknown) => e,
    );
    t.type(err, IdentityLoadError, `${c.what}: refused`);
    const e = err as IdentityLoadError;
    t.equal(e.file, s.files[c.fault], `${c.what}: names ${c.fault}`);
    t.ok(e.message.startsWith(`${s.files[c.fault]}: `), `${c.what}: message starts with the file`);
    t.match(e.message, c.problem, `${c.what}: says what is wrong`);
    t.equal(s.clock.pendingTimers(), 0, `${c.what}: no poller left behind`);
  }
});

t.test('intermediates in the certificate file are walked to a CA of the bundle', async (t) => {
  const dir = join(root, 'intermediate');
  await mkdir(dir);
  const intKey = join(dir, 'int-key.pem');
  const intCsr = join(dir, 'int.csr');
  const intCert = join(dir, 'int.pem');
  const ext = join(dir, 'int.ext');
  await writeFile(ext, 'basicConstraints = critical, CA:true\nkeyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n');
  await run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', intKey]);
  await run('openssl', ['req', '-new', '-key', intKey, '-subj', '/O=pilotfish/CN=Intermediate', '-out', intCsr]);
  await run('openssl', ['x509', '-req', '-in', intCsr, '-CA', mesh.caCert, '-CAkey', mesh.caKey, '-set_serial', '7', '-days', '30', '-extfile', ext, '-out', intCert]);
  const leaf = await issueWorkload(dir, { caCert: intCert, caKey: intKey }, { name: 'leaf', spiffeId: API_ID });
  const chain = join(dir, 'chain.pem');
  await writeFile(chain, (await readFile(leaf.cert, 'utf8')) + (await readFile(intCert, 'utf8')));

  const s = await setup(t, { cert: chain, key: leaf.key });
  const identity = await load(t, s);
  t.equal(identity.material.spiffeId, API_ID, 'leaf → intermediate → CA is accepted');

  const alone = await setup(t, leaf);
  await t.rejects(WorkloadIdentity.load(alone.files, { clock: alone.clock, logger: alone.logger }), {
    name: 'IdentityLoadError',
    message: /the certificate for spiffe:\/\/mesh\.local\/ns\/orders\/sa\/api \(issuer "O=pilotfish, CN=Intermediate"\) is not issued and signed by a CA/,
  }, 'without its intermediate the leaf does not chain to the bundle');
});

t.test('rotation: a new certificate and key are picked up by refresh()', async (t) => {
  const s = await setup(t, w('api'));
  const identity = await load(t, s);
  const { rotated, failed } = watch(identity);
  const before = identity.material;
  t.equal(await identity.refresh(), false, 'nothing changed: no rotation');

  // Same content written again (new inode and mtime): still no rotation.
  await install(w('api').cert, s.files.certFile);
  t.equal(await identity.refresh(), false, 'same content is not a rotation');
  t.equal(rotated.length, 0);

  const next = await issueWorkload(join(s.dir, 'next'), mesh, { name: 'api', spiffeId: API_ID });
  await install(next.key, s.files.keyFile);
  await install(next.cert, s.files.certFile);
  t.equal(await identity.refresh(), true, 'a new certificate and key rotate');
  t.equal(rotated.length, 1, 'onRotate ran once');
  t.equal(rotated[0], identity.material, 'with the new material');
  t.not(identity.material.fingerprint, before.fingerprint);
  t.not(identity.material.clientContext, before.clientContext, 'a new client context');
  t.equal(identity.material.keyPem, await readFile(next.key, 'utf8'));
  t.same(failed, []);
  t.match(s.logger.lines.at(-1), { level: 'info', msg: 'workload identity rotated', fields: { spiffeId: API_ID } });
  t.equal(await identity.refresh(), false, 'and it settles');
});

t.test('a half-written rotation keeps the old material, reports once, and completes when the key arrives', async (t) => {
  const s = await setup(t, w('api'));
  const identity = await load(t, s);
  const { rotated, failed } = watch(identity);
  const before = identity.material;

  await install(w('api2').cert, s.files.certFile); // the new certificate, the old key
  t.equal(await identity.refresh(), false, 'no rotation');
  t.equal(identity.material, before, 'the old material keeps serving');
  t.equal(failed.length, 1, 'onRotateFailed ran');
  t.equal(failed[0]!.file, s.files.keyFile);
  t.match(failed[0]!.message, /private key does not match/);
  t.match(s.logger.lines.at(-1), { level: 'warn', msg: /rotation failed/, fields: { error: /does not match/ } });
  t.equal(await identity.refresh(), false, 'still half-written');
  t.equal(failed.length, 1, 'the same failure is not reported again');

  await install(w('api2').key, s.files.keyFile);
  t.equal(await identity.refresh(), true, 'the key arrived: rotation');
  t.equal(rotated.length, 1);
  t.equal(identity.material.certPem, await readFile(w('api2').cert, 'utf8'));
});

t.test('the poller finds a rotation by itself, also one completed after a half-written attempt', async (t) => {
  const s = await setup(t, w('api'));
  const identity = await load(t, s);
  const { rotated, failed } = watch(identity);
  t.equal(s.clock.pendingTimers(), 1, 'one poll armed');

  await install(w('api2').cert, s.files.certFile);
  s.clock.advance(999);
  t.equal(failed.length, 0, 'not before refreshMs');
  s.clock.advance(1);
  await until('the half-written rotation is reported', () => failed.length === 1);
  await until('the poll re-armed', () => s.clock.pendingTimers() === 1);
  t.equal(rotated.length, 0);

  await install(w('api2').key, s.files.keyFile);
  s.clock.advance(1000);
  await until('rotation', () => rotated.length === 1);
  t.equal(identity.material.keyPem, await readFile(w('api2').key, 'utf8'));
  await until('the poll re-armed', () => s.clock.pendingTimers() === 1);

  s.clock.advance(1000);
  await until('the poll re-armed', () => s.clock.pendingTimers() === 1);
  t.equal(rotated.length, 1, 'unchanged files: no second rotation');
  t.equal(failed.length, 1);
});

t.test('a Kubernetes-style rotation (swapping the ..data symlink) is seen', async (t) => {
  // The layout kubelet gives a secret volume: name -> ..data/name, ..data -> ..<timestamp>.
  const dir = await mkdtemp(join(root, 'k8s-'));
  const version = async (stamp: string, files: { cert: string; key: string }) => {
    await mkdir(join(dir, stamp));
    await copyFile(files.cert, join(dir, stamp, 'tls.crt'));
    await copyFile(files.key, join(dir, stamp, 'tls.key'));
    await copyFile(mesh.caCert, join(dir, stamp, 'ca.crt'));
  };
  await version('..2024_01_01_00_00_00.1', w('api'));
  await symlink('..2024_01_01_00_00_00.1', join(dir, '..data'));
  for (const name of ['tls.crt', 'tls.key', 'ca.crt']) await symlink(join('..data', name), join(dir, name));
  const clock = new ManualClock(0, Date.now());
  const logger = recordingLogger();
  const files: IdentityFiles = { trustDomain: 'mesh.local', certFile: join(dir, 'tls.crt'), keyFile: join(dir, 'tls.key'), trustBundleFile: join(dir, 'ca.crt'), refreshMs: 500 };
  const identity = await WorkloadIdentity.load(files, { clock, logger });
  t.teardown(() => identity.close());
  const { rotated, failed } = watch(identity);

  await version('..2024_01_02_00_00_00.2', w('api2'));
  await symlink('..2024_01_02_00_00_00.2', join(dir, '..data_tmp'));
  await rename(join(dir, '..data_tmp'), join(dir, '..data'));
  await rm(join(dir, '..2024_01_01_00_00_00.1'), { recursive: true });
  clock.advance(500);
  await until('rotation through the symlink', () => rotated.length === 1);
  t.equal(identity.material.certPem, await readFile(w('api2').cert, 'utf8'));
  t.same(failed, [], 'an atomic swap never looks half-written');
});

t.test('close() stops polling, even with a poll in flight', async (t) => {
  const s = await setup(t, w('api'));
  const identity = await load(t, s);
  const { rotated } = watch(identity);
  identity.close();
  t.equal(s.clock.pendingTimers(), 0, 'no poll armed after close');
  await install(w('api2').key, s.files.keyFile);
  await install(w('api2').cert, s.files.certFile);
  s.clock.advance(5000);
  t.equal(await identity.refresh(), false, 'a closed identity no longer rotates');
  t.equal(rotated.length, 0);
  t.equal(identity.material.spiffeId, API_ID, 'the last material stays readable');

  const s2 = await setup(t, w('api'));
  const polling = await load(t, s2);
  s2.clock.advance(1000); // a poll starts (its stat is in flight)
  polling.close();
  await sleep(50);
  t.equal(s2.clock.pendingTimers(), 0, 'the in-flight poll does not re-arm');
});
