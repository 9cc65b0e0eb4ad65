/** `pilotfish certs`: what it issues, checked with the real openssl and node:crypto. */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { issueCertificates, issueWorkload, runCertsCommand } from '../../cmd/certs.js';

const run = promisify(execFile);

async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-certs-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** `openssl verify`'s verdict, without throwing on a failed verification. */
async function verify(caFile: string, certFile: string): Promise<string> {
  try {
    const { stdout } = await run('openssl', ['verify', '-CAfile', caFile, certFile]);
    return stdout;
  } catch (err) {
    const e = err as { stdout: string; stderr: string };
    return `${e.stdout}${e.stderr}`;
  }
}

async function cert(file: string): Promise<X509Certificate> {
  return new X509Certificate(await readFile(file));
}

function collect(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (chunk: Buffer) => (text += chunk.toString()));
  return { stream, text: () => text };
}

t.test('issued certificates verify against the CA and carry their SPIFFE ID', async (t) => {
  const dir = await tempDir(t);
  const files = await issueCertificates(dir, {
    caName: 'Test CA / with=odd+chars',
    workloads: [
      { name: 'api', spiffeId: 'spiffe://mesh.local/ns/orders/sa/api', dnsNames: ['api.orders.svc'] },
      { name: 'old', spiffeId: 'spiffe://mesh.local/ns/orders/sa/old', expired: true },
      { name: 'short', spiffeId: 'spiffe://mesh.local/ns/orders/sa/short', days: 2 },
    ],
  });
  t.same(files, {
    caCert: join(dir, 'ca.pem'),
    caKey: join(dir, 'ca-key.pem'),
    workloads: {
      api: { cert: join(dir, 'api.pem'), key: join(dir, 'api-key.pem') },
      old: { cert: join(dir, 'old.pem'), key: join(dir, 'old-key.pem') },
      short: { cert: join(dir, 'short.pem'), key: join(dir, 'short-key.pem') },
    },
  });

  t.match(await verify(files.caCert, files.workloads.api!.cert), /: OK/, 'openssl verify accepts the workload certificate');
  t.match(await verify(files.caCert, files.workloads.old!.cert), /certificate has expired/, 'the expired one is refused as expired');

  const ca = await cert(files.caCert);
  t.equal(ca.ca, true, 'the CA is a CA');
  t.match(ca.subject, /CN=Test CA \/ with=odd\\?\+chars/, 'the CA name, whatever its characters (Node escapes "+")');
  t.equal(ca.keyUsage, undefined, 'the CA has no extended key usage (Node calls it keyUsage)');
  const caText = (await run('openssl', ['x509', '-in', files.caCert, '-noout', '-ext', 'basicConstraints,keyUsage'])).stdout;
  t.match(caText, /CA:TRUE/);
  t.match(caText, /Certificate Sign/);

  const api = await cert(files.workloads.api!.cert);
  t.equal(api.ca, false);
  t.equal(api.subjectAltName, 'URI:spiffe://mesh.local/ns/orders/sa/api, DNS:api.orders.svc');
  t.same(api.keyUsage?.sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2'], 'serverAuth and clientAuth');
  t.equal(api.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1', 'EC P-256');
  t.ok(api.checkIssued(ca) && api.verify(ca.publicKey), 'signed by the CA');
  const apiText = (await run('openssl', ['x509', '-in', files.workloads.api!.cert, '-noout', '-ext', 'basicConstraints,keyUsage'])).stdout;
  t.match(apiText, /CA:FALSE/);
  t.match(apiText, /Digital Signature/);

  const now = Date.now();
  const old = await cert(files.workloads.old!.cert);
  t.ok(Date.parse(old.validTo) < now, 'the expired certificate ended in the past');
  t.ok(Date.parse(old.validFrom) < Date.parse(old.validTo), 'and is otherwise well-formed (starts before it ends)');
  const short = await cert(files.workloads.short!.cert);
  t.ok(Math.abs(Date.parse(short.validTo) - (now + 2 * 86_400_000)) < 120_000, 'days sets the validity');

  for (const key of [files.caKey, files.workloads.api!.key]) {
    t.equal((await stat(key)).mode & 0o777, 0o600, `${key} is 0600`);
  }
});

t.test('issueWorkload signs another certificate with the same CA; parallel issuers do not interfere', async (t) => {
  const [a, b] = await Promise.all([tempDir(t), tempDir(t)]);
  const [fa, fb] = await Promise.all([
    issueCertificates(a, { workloads: [{ name: 'w', spiffeId: 'spiffe://a.local/w' }] }),
    issueCertificates(b, { workloads: [{ name: 'w', spiffeId: 'spiffe://b.local/w' }] }),
  ]);
  const again = await issueWorkload(join(a, 'next'), fa, { name: 'w', spiffeId: 'spiffe://a.local/w' });
  t.match(await verify(fa.caCert, again.cert), /: OK/, 'a later certificate verifies with the first CA');
  t.not(await readFile(again.key, 'utf8'), await readFile(fa.workloads.w!.key, 'utf8'), 'with a new key');
  t.match(await verify(fb.caCert, fa.workloads.w!.cert), /unable to get local issuer|verification failed/, 'each dir has its own CA');
  t.equal((await cert(fb.workloads.w!.cert)).subjectAltName, 'URI:spiffe://b.local/w');
});

t.test('raw subject alt names make certificates that are not valid SVIDs', async (t) => {
  const dir = await tempDir(t);
  const files = await issueCertificates(dir, {
    workloads: [
      { name: 'two', spiffeId: '', subjectAltNames: ['URI:spiffe://mesh.local/a', 'URI:spiffe://mesh.local/b'] },
      { name: 'odd', spiffeId: '', subjectAltNames: ['URI:spiffe://mesh.local/a,b#c$d"e\'f\\g'] },
      { name: 'none', spiffeId: '', subjectAltNames: [] },
    ],
  });
  t.equal((await cert(files.workloads.two!.cert)).subjectAltName, 'URI:spiffe://mesh.local/a, URI:spiffe://mesh.local/b');
  t.equal((await cert(files.workloads.odd!.cert)).subjectAltName, `URI:${JSON.stringify('spiffe://mesh.local/a,b#c$d"e\'f\\g').replace(',', '\\u002c')}`, 'config metacharacters reach the certificate verbatim');
  t.equal((await cert(files.workloads.none!.cert)).subjectAltName, undefined);
});

t.test('runCertsCommand writes the CA and workloads and says what it wrote', async (t) => {
  const dir = await tempDir(t);
  const out = collect();
  const err = collect();
  const code = await runCertsCommand(
    ['--out', dir, '--trust-domain', 'demo.local', '--workload', 'client', '--workload=server=spiffe://demo.local/ns/shop/sa/server', '--days', '7'],
    { out: out.stream, err: err.stream },
  );
  t.equal(code, 0, err.text());
  for (const f of ['ca.pem', 'ca-key.pem', 'client.pem', 'client-key.pem', 'server.pem', 'server-key.pem']) {
    t.match(out.text(), join(dir, f), `reports ${f}`);
  }
  t.equal((await cert(join(dir, 'client.pem'))).subjectAltName, 'URI:spiffe://demo.local/ns/default/sa/client', 'a bare NAME gets a default ID in the trust domain');
  t.equal((await cert(join(dir, 'server.pem'))).subjectAltName, 'URI:spiffe://demo.local/ns/shop/sa/server');
  t.match(await verify(join(dir, 'ca.pem'), join(dir, 'server.pem')), /: OK/);
});

t.test('runCertsCommand refuses bad arguments with exit 2 and usage', async (t) => {
  const cases: [string[], RegExp][] = [
    [['--workload', 'a'], /--out DIR is required/],
    [['--out', '/tmp/x', '--workload', 'a=spiffe://other.local/a'], /not in trust domain mesh\.local/],
    [['--out', '/tmp/x', '--workload', 'a=spiffe://mesh.local/a/../b'], /is not a SPIFFE ID: .*"\.\." segment/],
    [['--out', '/tmp/x', '--workload', '../evil'], /workload name/],
    [['--out', '/tmp/x', '--trust-domain', 'Mesh'], /lower case/],
    [['--out', '/tmp/x', '--days', '-1'], /--days must be/],
    [['--frobnicate'], /unknown argument --frobnicate/],
  ];
  for (const [args, want] of cases) {
    const out = collect();
    const err = collect();
    t.equal(await runCertsCommand(args, { out: out.stream, err: err.stream }), 2, args.join(' '));
    t.match(err.text(), want);
    t.match(err.text(), /Usage: pilotfish certs/);
  }
  const help = collect();
  t.equal(await runCertsCommand(['--help'], { out: help.stream, err: help.stream }), 0);
  t.match(help.text(), /Usage: pilotfish certs --out DIR/);
});
